"""canaryctl audit: verify the hash chain, query events."""

from __future__ import annotations

from contextlib import closing
from datetime import UTC

import click

from controller.cli.context import open_database, open_store, run, wall_clock
from controller.cli.output import json_line, print_json, print_table


@click.group()
def audit() -> None:
    """Verify and query the tamper-evident audit trail.

    Example: canaryctl audit query --since 24h --kind rollback.planned
    """


@audit.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def verify(as_json: bool) -> int:
    """Check every link of the audit chain. Exit 0 intact, 1 broken (naming the first bad seq).

    After `canaryctl db prune` the chain starts at the first event kept, from the hash the prune's
    anchor event (`audit.pruned`) recorded; the archive holds the events before it.

    Keep the printed head hash somewhere else (a ticket, a chat): a later verify that prints a
    different hash for the same seq means the whole chain was rewritten.

    Example: canaryctl audit verify
    """
    from controller.store.audit import verify as verify_chain

    async def main():
        async with open_database() as db:
            return await verify_chain(db)

    report = run(main)
    if as_json:
        print_json({"ok": report.ok, "checked": report.checked, "head_seq": report.head_seq,
                    "head_hash": report.head_hash, "first_bad_seq": report.first_bad_seq, "reason": report.reason,
                    "anchor_seq": report.anchor_seq, "archived_through": report.archived_through})
    elif report.ok:
        since = (f" (events 1..{report.archived_through} archived by a prune; checked from the hash its anchor, "
                 f"seq {report.anchor_seq}, records)" if report.anchor_seq is not None else "")
        click.echo(f"audit chain intact: {report.checked} events, head seq {report.head_seq} hash {report.head_hash}"
                   f"{since}")
    else:
        click.echo(f"audit chain BROKEN at seq {report.first_bad_seq}: {report.reason} "
                   f"({report.checked} events verified before it)", err=True)
    return 0 if report.ok else 1


def _instant(ctx, param, value):
    if value is None:
        return None
    from controller.timespec import parse_instant

    try:
        return parse_instant(value, wall_clock().now())
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@audit.command()
@click.option("--since", callback=_instant, metavar="T", help="ISO time, or a duration ago (2h, 1d).")
@click.option("--until", callback=_instant, metavar="T", help="ISO time (exclusive), or a duration ago.")
@click.option("--kind", metavar="K", help="Event kind, e.g. release.added.")
@click.option("--release", metavar="V", help="Release version.")
@click.option("--symbol", metavar="S", help="Symbol, e.g. BTCUSDT.")
@click.option("--actor", metavar="A", help="Operator name, or 'controller'.")
@click.option("--limit", type=click.IntRange(min=1), help="At most this many events.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line, hashes included.")
def query(since, until, kind, release, symbol, actor, limit, as_json) -> None:
    """List audit events, oldest first, matching every filter given.

    Example: canaryctl audit query --since 24h --kind leverage.restored --symbol BTCUSDT --json
    """
    from controller.store.listing import audit_events

    records = []
    with closing(open_store()) as reader, reader.snapshot():
        for row in audit_events(reader, since=since, until=until, kind=kind, release=release, symbol=symbol,
                                actor=actor, limit=limit):
            if as_json:  # stream: a long trail is never held in memory
                click.echo(json_line(_event_json(row)))
            else:
                records.append((row, row.data))
    if as_json:
        return
    rows = ((r.seq, r.ts.strftime("%Y-%m-%d %H:%M:%S"), _who(r.actor, payload), r.kind, r.subject, r.release,
             r.symbol, json_line(payload)) for r, payload in records)
    if not print_table(None, ["seq", "time (UTC)", "actor", "kind", "subject", "release", "symbol", "payload"], rows):
        click.echo("no audit events match", err=True)


def _event_json(row) -> dict:
    """An event as `store.audit.AuditRecord.to_json` gives it: the payload decoded, the time in UTC to the microsecond."""
    return {"seq": row.seq, "ts": row.ts.astimezone(UTC).isoformat(timespec="microseconds"), "actor": row.actor,
            "kind": row.kind, "subject": row.subject, "release": row.release, "symbol": row.symbol,
            "payload": row.data, "prev_hash": row.prev_hash, "hash": row.hash}


def _who(actor: str, payload) -> str:
    """The actor, and the operating-system user that gave the command when it is someone else."""
    os_user = payload.get("os_user") if isinstance(payload, dict) else None
    return f"{actor} (os user {os_user})" if os_user and os_user != actor else actor
