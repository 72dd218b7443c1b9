"""canaryctl report: a rollout's stabilization checklist filled from evidence; its archive; verify.

Exit statuses: 0 ok; 1 the archive verify read was tampered with (each problem named); 2 bad
input (an unknown rollout, a file that is no report archive, an archive that exists already).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from controller.cli.context import open_database, run, settings
from controller.cli.output import print_json


class _ReportGroup(click.Group):
    """``report ROLLOUT`` renders; ``report verify FILE`` verifies: a first word that is not a
    subcommand is the rollout (``report render ROLLOUT`` spells it out)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = ["render", *args]
        return super().parse_args(ctx, args)


@click.group(cls=_ReportGroup, subcommand_metavar="ROLLOUT [OPTIONS] | verify FILE.tar.gz", epilog="Examples:\n\n"
             "  canaryctl report 1.2.0                      # Markdown on stdout\n\n"
             "  canaryctl report 7 --format json | jq .checklist\n\n"
             "  canaryctl report 1.2.0 --archive rollout-7.tar.gz\n\n"
             "  canaryctl report verify rollout-7.tar.gz\n\n"
             "Exit status: 0 ok, 1 archive tampered with, 2 bad input (unknown rollout, not an archive).")
def report() -> None:
    """The stabilization checklist of a rollout, every line filled from evidence; archive and verify it.

    ROLLOUT is a rollout id, or a release version meaning that release's latest rollout.
    """


@report.command("render")
@click.argument("rollout", metavar="ROLLOUT")
@click.option("--format", "fmt", type=click.Choice(["md", "json"]), default="md", show_default=True,
              help="Markdown for people, JSON for scripts (the Markdown is rendered from it).")
@click.option("--archive", "archive_path", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE.tar.gz",
              help="Write the report with its evidence (audit excerpt, config snapshots, bot logs, verdict values, "
                   "plots) and a SHA-256 manifest to FILE instead of printing it.")
@click.option("--force", is_flag=True, help="Replace an existing archive file.")
@click.option("--check-archive", "check_path", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE.tar.gz",
              help="Say in the completion section whether FILE exists and verifies as this rollout's archive.")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), envvar="STATE_DIRECTORY",
              show_envvar=True, help="The daemon's state folder, where the bots' logs are (default: as `canaryctl "
                                     "run`'s).")
@click.option("--policies", "policies_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Policy folder (default: the --config's policies_dir, else the shipped policies/).")
def render(rollout: str, fmt: str, archive_path: Path | None, force: bool, check_path: Path | None,
           state_dir: Path | None, policies_dir: Path | None) -> None:
    """Render the stabilization checklist of ROLLOUT, or archive it with its evidence.

    Examples:

      canaryctl report 1.2.0 > rollout.md

      canaryctl report 1.2.0 --archive /srv/archive/rollout-1.2.0.tar.gz
    """
    from controller.cli.context import database_url, default_state_dir
    from controller.report import evidence

    if archive_path is not None and check_path is not None:
        raise click.UsageError("--check-archive checks an archive written before; --archive writes one: give one")
    if archive_path is not None:
        if archive_path.exists() and not force:
            raise click.UsageError(f"{archive_path} exists; choose another name, or add --force to replace it")
        if not archive_path.parent.is_dir():
            raise click.UsageError(f"folder {archive_path.parent} does not exist")
    url = database_url()
    folder = state_dir or default_state_dir(url)
    policies = policies_dir or _policies_dir()

    async def main():
        async with open_database() as db:
            return await evidence.gather(db, rollout, policies_dir=policies, state_dir=folder)

    progress = _progress() if archive_path is not None else (lambda text: None)
    progress("collecting evidence")
    ev = run(main)
    if archive_path is None:
        from controller.report import archive, document, markdown

        check = archive.check_of(check_path, ev.id, ev.release) if check_path is not None else None
        doc = document.build(ev, archived=False, archive_check=check)
        if fmt == "json":
            print_json(doc)
        else:
            sys.stdout.write(markdown.render(doc, plots_linked=False))
        return
    from controller.report import archive

    written = archive.write(archive_path, ev, force=force, progress=progress)
    summary = (f"wrote {written.path}: rollout {ev.id} ({ev.release}), {written.members} members, "
               f"{written.bytes} bytes, sha256 {written.sha256}")
    if fmt == "json":
        print_json({"archive": str(written.path), "rollout": ev.id, "release": ev.release,
                    "members": written.members, "bytes": written.bytes, "sha256": written.sha256})
    else:
        click.echo(summary)


@report.command("verify")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE.tar.gz")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def verify(file: Path, as_json: bool) -> int:
    """Check an archive: every member the manifest lists is present with its SHA-256, no other member
    is, and the audit excerpt's hash chain holds. Exit 0 intact, 1 tampered (naming each member and
    how), 2 not a readable archive, or one past verify's bounds (more than 10,000 members, a header
    over 64 KiB, a manifest, report.json or audit excerpt over 32 MiB). Control characters in the
    names printed are escaped.

    Example: canaryctl report verify rollout-7.tar.gz
    """
    from controller.report.archive import printable
    from controller.report.archive import verify as verify_archive

    result = verify_archive(file)
    if as_json:  # ASCII: every character a name from the archive holds past it is a \u escape
        click.echo(json.dumps({"ok": result.ok, "folder": result.root, "members": result.members,
                               "audit_events": result.audit_events,
                               "problems": [{"member": p.member, "problem": p.how} for p in result.problems]},
                              ensure_ascii=True))
    elif result.ok:
        click.echo(f"{printable(str(file))}: intact ({result.members} members match the manifest; audit excerpt "
                   f"of {result.audit_events} events chains)")
    else:  # names come from the archive: escaped, none can draw a line of its own
        click.echo(f"{printable(str(file))}: TAMPERED ({len(result.problems)} problems)", err=True)
        for problem in result.problems:
            click.echo(f"  {printable(problem.member)}: {printable(problem.how)}", err=True)
    return 0 if result.ok else 1


def _policies_dir() -> Path:
    """The --config's policies_dir (itself the shipped policies unless set), else the shipped policies."""
    opts = settings()
    if opts.config_path is not None:
        from controller.config.daemon import load_daemon_config

        return load_daemon_config(opts.config_path).policies_dir
    from controller import shipped

    return shipped.policies_dir()


def _progress():
    """Progress lines on stderr when it is a terminal; silence otherwise."""
    if not sys.stderr.isatty():
        return lambda text: None
    return lambda text: click.echo(f"report: {text}...", err=True)
