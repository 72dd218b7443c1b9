"""canaryctl policy: validate policy files."""

from __future__ import annotations

from pathlib import Path

import click

from controller.cli.output import print_json


@click.group()
def policy() -> None:
    """Validate the policy files that gate each stage.

    Example: canaryctl policy check policies/
    """


@policy.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per file.")
def check(paths: tuple[Path, ...], as_json: bool) -> None:
    """Validate policy files (a folder means its *.yaml files); exit 2 at the first error.

    Example: canaryctl policy check policies/
    """
    from controller.analysis.policy import load_policies

    for path, loaded in load_policies(list(paths)).items():
        if as_json:
            print_json({"file": path, "stage": loaded.stage, "policies": [p.name for p in loaded.policies],
                        "limits": {p.name: p.describe_limits() for p in loaded.policies if p.limited}})
        else:
            actions = sorted({p.on_breach for p in loaded.policies})
            click.echo(f"{path}: stage {loaded.stage}, {len(loaded.policies)} policies ok "
                       f"(on breach: {', '.join(actions)})")
            for limited in (p for p in loaded.policies if p.limited):
                click.echo(f"  {limited.name}: {limited.describe_limits()}")
