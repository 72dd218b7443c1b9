"""canaryctl db: create, upgrade or downgrade the schema; prune rows past their retention."""

from __future__ import annotations

import json
from pathlib import Path

import click

from controller.cli.context import open_database, run
from controller.store.database import display_url


@click.group()
def db() -> None:
    """Create or upgrade the database schema; prune old rows into an archive.

    Example: canaryctl --db sqlite:///canary.db db upgrade
    """


@db.command()
@click.option("--revision", default="head", show_default=True, help="Target revision.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def upgrade(revision: str, as_json: bool) -> None:
    """Create the schema, or bring it to REVISION. Safe to run again.

    Example: canaryctl --db postgresql://canary@db/canary db upgrade
    """
    from controller.store import schema

    async def main():
        async with open_database(check_schema=False) as database:
            return display_url(database.url), *await schema.upgrade(database, revision)

    url, before, after = run(main)
    if as_json:
        click.echo(json.dumps({"db": url, "from": before, "to": after}))
    elif before == after:
        click.echo(f"{url}: already at revision {after}")
    else:
        click.echo(f"{url}: upgraded from {before or 'empty'} to {after}")


@db.command()
@click.argument("revision")
@click.option("--yes", is_flag=True, help="Confirm: a downgrade drops tables and their data.")
def downgrade(revision: str, yes: bool) -> None:
    """Take the schema back to REVISION ("base" drops everything). Destroys data.

    Example: canaryctl db downgrade base --yes
    """
    from controller.store import schema

    if not yes:
        raise click.UsageError("a downgrade drops tables and their data; add --yes to confirm")

    async def main():
        async with open_database(check_schema=False) as database:
            return display_url(database.url), *await schema.downgrade(database, revision)

    url, before, after = run(main)
    click.echo(f"{url}: downgraded from {before or 'empty'} to {after or 'empty'}")


@db.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def status(as_json: bool) -> int:
    """Show the database's schema revision and whether this canaryctl can use it.

    Exit status 1 when the schema is missing or not at the expected revision.

    Example: canaryctl db status --json
    """
    from controller.store import schema

    async def main():
        async with open_database(check_schema=False) as database:
            return display_url(database.url), await schema.current_revision(database)

    url, found = run(main)
    ok = found == schema.SCHEMA_REVISION
    if as_json:
        click.echo(json.dumps({"db": url, "revision": found, "expected": schema.SCHEMA_REVISION, "ok": ok}))
    else:
        click.echo(f"{url}: revision {found or 'none'} (expected {schema.SCHEMA_REVISION}) {'ok' if ok else 'needs `canaryctl db upgrade`'}")
    return 0 if ok else 1


def _duration(ctx, param, value: str) -> float:
    from controller.timespec import parse_duration

    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    if seconds <= 0:
        raise click.BadParameter(f"{value!r} is no time at all; expected a positive duration such as 90d")
    return seconds


@db.command()
@click.option("--older-than", "older_than", default="90d", show_default=True, callback=_duration, metavar="DURATION",
              help="Prune rows older than this (90d, 12w, 2160h).")
@click.option("--archive", "archive_path", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE.tar.gz",
              help="Where the pruned rows are archived first (default: STATE_DIR/pruned/prune-CUT.tar.gz). "
                   "Never replaced: an existing file is refused.")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), envvar="STATE_DIRECTORY",
              show_envvar=True, help="The daemon's state folder, for the default archive path.")
@click.option("--dry-run", is_flag=True, help="Count what would go; write and delete nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def prune(older_than: float, archive_path: Path | None, state_dir: Path | None, dry_run: bool, as_json: bool) -> None:
    """Archive, then delete, rows older than --older-than: verdict changes, stage runs and acknowledged
    commands of finished rollouts, and the oldest audit events. One transaction: the archive (the report
    archive's format; `canaryctl report verify` checks it) is written whole before anything is deleted,
    and an `audit.pruned` event records the archived audit range and its last hash, from which
    `canaryctl audit verify` checks the rest. A rollout under way keeps every row.

    Exit status: 0 done (or nothing to prune), 2 bad input (a duration that is none, an archive that
    exists or cannot be written: nothing is deleted).

    Examples:

      canaryctl db prune --older-than 90d --dry-run

      canaryctl db prune --older-than 90d --archive /srv/archive/prune-2026-12.tar.gz
    """
    from datetime import timedelta

    from controller.cli.context import database_url, default_state_dir, operator_name, wall_clock
    from controller.report import retention

    target = archive_path
    if target is None and not dry_run:
        cut = wall_clock().now() - timedelta(seconds=older_than)
        target = retention.default_archive(state_dir or default_state_dir(database_url()), cut)
        target.parent.mkdir(parents=True, exist_ok=True)
    if target is not None and not dry_run:
        retention.check_target(target)  # before the database is opened: a bad path deletes nothing
    progress = _progress()

    async def main():
        async with open_database() as database:
            return await retention.prune(database, wall_clock(), older_than=older_than, target=target, dry_run=dry_run,
                                         actor=operator_name(), progress=progress)

    pruned = run(main)
    if as_json:
        click.echo(json.dumps(pruned.to_json()))
        return
    counts = ", ".join(f"{n} {name.replace('_', ' ')}" for name, n in pruned.rows.items())
    cut = pruned.cut.strftime("%Y-%m-%d %H:%M:%S UTC")
    kept = (f"; rollouts under way kept whole: {', '.join(map(str, pruned.kept_active))}"
            if pruned.kept_active else "")
    if dry_run:
        click.echo(f"dry run: {pruned.total} rows older than {cut} would be archived and deleted ({counts}){kept}")
    elif not pruned.total:
        click.echo(f"nothing older than {cut} to prune{kept}")
    else:
        audit_range = f"; audit events {pruned.audit_range[0]}..{pruned.audit_range[1]}" if pruned.audit_range else ""
        click.echo(f"archived {pruned.total} rows older than {cut} to {pruned.written.path} (sha256 "
                   f"{pruned.written.sha256}) and deleted them ({counts}{audit_range}); anchor audit event "
                   f"seq {pruned.anchor_seq}{kept}")


def _progress():
    """Progress lines (counts of rows) on stderr when it is a terminal; silence otherwise."""
    import sys

    if not sys.stderr.isatty():
        return lambda text: None
    return lambda text: click.echo(f"prune: {text}...", err=True)
