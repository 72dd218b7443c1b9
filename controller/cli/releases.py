"""canaryctl release / config: record releases, show and compare config snapshots."""

from __future__ import annotations

from contextlib import closing
from pathlib import Path

import click

from controller.cli.context import open_database, open_store, operator_name, run, wall_clock
from controller.cli.output import json_line, print_json, print_table

_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


@click.group()
def release() -> None:
    """Record releases and list them.

    Example: canaryctl release list
    """


@release.command("add")
@click.argument("version")
@click.option("--manifest", "manifest_file", type=_FILE, required=True, help="Release manifest (YAML).")
@click.option("--config", "config_file", type=_FILE, required=True, help="Strategy config the release runs with (YAML).")
@click.option("--notes", help="Free text kept with the release (change log, ticket).")
@click.option("--json", "as_json", is_flag=True, help="Print the recorded release as one JSON object.")
def add(version: str, manifest_file: Path, config_file: Path, notes: str | None, as_json: bool) -> None:
    """Record release VERSION and snapshot its config; both are audited.

    The same VERSION with identical content is a no-op; with different content it is refused
    (exit 2): a version is immutable.

    Example: canaryctl release add 1.4.0 --manifest examples/reference-bot/manifest.yaml
    --config examples/reference-bot/strategy.yaml --notes "tighter stops"
    """
    from controller.cli.context import settings
    from controller.release_files import read_release
    from controller.store.releases import add_release

    roots = []
    if settings().config_path is not None:  # the daemon config may allow artifact roots of its own
        from controller.config.daemon import load_daemon_config

        roots = load_daemon_config(settings().config_path).artifact_roots
    # validate before opening anything
    new = read_release(version, manifest_file, config_file, notes, artifact_roots=roots)

    async def main():
        async with open_database() as db:
            return await add_release(db, wall_clock(), new, actor=operator_name())

    recorded = run(main)
    info = recorded.release
    if as_json:
        print_json({**info.to_json(), "created": recorded.created})
    elif recorded.created:
        click.echo(f"recorded release {info.version}: config snapshot {info.config_sha256[:12]}, "
                   f"artifact {info.artifact_sha256[:12]}")
    else:
        click.echo(f"release {info.version} is already recorded with identical content; nothing changed")


@release.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def list_(as_json: bool) -> None:
    """List recorded releases, oldest first.

    Example: canaryctl release list --json | jq -r .version
    """
    from controller.store import listing

    with closing(open_store()) as reader:
        releases = listing.releases(reader)
    if as_json:
        for info in releases:
            click.echo(json_line(info.to_json()))
        return
    rows = ((r.version, r.created_at.strftime("%Y-%m-%d %H:%M"), r.created_by, r.config_sha256[:12],
             r.artifact_sha256[:12], r.notes) for r in releases)
    if not print_table(None, ["version", "recorded (UTC)", "by", "config", "artifact", "notes"], rows):
        click.echo("no releases recorded yet; add one with `canaryctl release add`", err=True)


@click.group()
def config() -> None:
    """Show and compare immutable config snapshots.

    Example: canaryctl config diff 1.3.2 1.4.0
    """


@config.command()
@click.argument("snapshot")
@click.option("--json", "as_json", is_flag=True, help="Print the config as one JSON object.")
def show(snapshot: str, as_json: bool) -> None:
    """Print config SNAPSHOT (a SHA-256, a prefix of it, or a release version).

    Example: canaryctl config show 1.4.0
    """
    from controller.store import listing

    with closing(open_store()) as reader:
        snap = listing.snapshot(reader, snapshot)
    if as_json:
        print_json({"sha256": snap.sha256, "created_at": snap.created_at.isoformat(), "config": snap.config})
        return
    import yaml

    click.echo(f"# config snapshot {snap.sha256} (recorded {snap.created_at:%Y-%m-%d %H:%M:%S} UTC)")
    click.echo(yaml.safe_dump(snap.config, sort_keys=True, default_flow_style=False).rstrip())


@config.command()
@click.argument("a")
@click.argument("b")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per changed field.")
def diff(a: str, b: str, as_json: bool) -> None:
    """Show field by field what changed from snapshot A to snapshot B.

    A and B are SHA-256s, prefixes, or release versions.

    Example: canaryctl config diff 1.3.2 1.4.0
    """
    from controller.store import listing
    from controller.store.release_record import diff_configs

    with closing(open_store()) as reader, reader.snapshot():
        snap_a, snap_b = listing.snapshot(reader, a), listing.snapshot(reader, b)
    changes = diff_configs(snap_a.config, snap_b.config)
    if as_json:
        for change in changes:
            click.echo(json_line(change.to_json()))
        return
    if not changes:
        click.echo(f"{snap_a.sha256[:12]} and {snap_b.sha256[:12]} are identical")
        return
    click.echo(f"--- {a} ({snap_a.sha256[:12]})\n+++ {b} ({snap_b.sha256[:12]})")
    for change in changes:
        if change.kind == "added":
            click.echo(click.style(f"+ {change.path}: {json_line(change.after)}", fg="green"))
        elif change.kind == "removed":
            click.echo(click.style(f"- {change.path}: {json_line(change.before)}", fg="red"))
        else:
            click.echo(click.style(f"~ {change.path}: {json_line(change.before)} -> {json_line(change.after)}", fg="yellow"))
