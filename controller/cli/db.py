"""canaryctl db: create, upgrade or downgrade the schema."""

from __future__ import annotations

import json

import click

from controller.cli.context import open_database, run
from controller.store.database import display_url


@click.group()
def db() -> None:
    """Create or upgrade the database schema.

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
