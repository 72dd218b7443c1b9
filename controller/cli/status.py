"""canaryctl status: is the canary healthy? One screen, from the store, in a blink.

What it shows per rollout: release and state; which daemon owns it (acts on it) and since when;
the baseline (the release live on the stage's baseline account); the stage and the time left; how long it has waited for a person (paused or
awaiting sign-off) and when that wait's deadline passes; the capital share against the stage's cap;
each policy of the stage with its latest verdict, value against threshold, trend (the values
of its recent verdict changes) and gate standing; pending sign-offs and unanswered commands;
the last breach; the last rollback with its steps; each webhook's last delivery of the rollout's
events (ok, or failing since when after how many attempts); and the operator's next move.

It must start fast (under 300 ms on the default SQLite store: `bench/cli_cold.py`), so this module
imports neither SQLAlchemy nor pydantic nor rich: the data comes through
`controller.store.readonly` and `controller.store.summary`, and the screen is laid out and drawn
by `controller.cli.status_screen` (rich), imported only when there is a screen to draw.

``--json`` prints one object per refresh, ``{"version": 1, "now": ISO, "rollouts": [...]}``; each
rollout is `controller.store.summary.Summary.to_json`: id, release, state, reason, pipeline,
updated_at, owner ({owner, epoch, since, expires_at, expired}: the daemon that acts on it, or null
while none has claimed it), baseline {release, live, environment, account}, stage {name, title, index, count,
environment, account, duration_seconds, started_at, ends_at, remaining_seconds, deadline_at,
finished_at, outcome}, capital_share {cap, measured, policy, at}, policies [{policy, group,
verdict, value, threshold, condition, action, reason, at, samples, window_seconds, trend, gate,
clean_at}], signoffs {required, pending, overdue, signed}, pending_commands [{id, kind, actor,
created_at}], last_breach (a policy entry or null), last_rollback ({trigger, reason,
planned_at, done, total, current, steps [{position, name, account, state, attempts, error,
started_at, finished_at}]} or null), last_verdict_at, dry_run [{policy, would_have, reason, first,
last, count}], waiting ({since, deadline_at, deadline_seconds, on_deadline, remaining_seconds,
overdue} while paused or awaiting sign-off, else null), open_anomalies [{id, rollout, stage, by, at,
text, open, resolution}] (`canaryctl note`), anomalies_block_promotion, webhooks [{webhook (scheme://host/path,
never its query), environment, event, state (sending | delivered | failed), ok, attempts, last_status,
last_error, last_attempt_at, delivered_at, failing_since}]: each webhook's last delivery of the
rollout's events. Times are ISO 8601 UTC; fields are only ever added (a removal or a change of meaning raises ``version``).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import click

from controller.cli.context import open_store
from controller.cli.numbers import FiniteFloatRange
from controller.store import summary

if TYPE_CHECKING:
    from rich.text import Text


@click.command("status")
@click.argument("rollout", metavar="[ROLLOUT]", required=False)
@click.option("--watch", is_flag=True, help="Redraw every --interval seconds until Ctrl-C.")
@click.option("--interval", type=FiniteFloatRange(min=0.1), default=2.0, show_default=True, metavar="S",
              help="Seconds between redraws with --watch.")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object per refresh (schema version 1, documented in controller/cli/status.py).")
def status(rollout: str | None, watch: bool, interval: float, as_json: bool) -> None:
    """Is the canary healthy? Stage and time left, capital share, every policy's verdict, value vs
    threshold and trend, pending sign-offs, the last breach and rollback.

    ROLLOUT is a rollout id or a release version (its latest rollout); without it, the rollouts
    under way (or the latest one). On a terminal --watch redraws in place; piped, it prints one
    frame (or one JSON line) per refresh, frames separated by a blank line. Colour only on a
    terminal, never with NO_COLOR set. Time left is measured on this host's clock.

    \b
    Examples:
      canaryctl status
      canaryctl status 1.4.0 --watch --interval 5
      canaryctl status --json | jq '.rollouts[0].policies[] | select(.verdict != "pass")'

    Exit status: 0 shown; 1 the database cannot be read; 2 no such rollout; 130 --watch ended
    with Ctrl-C.
    """
    reader = open_store()
    try:
        frame = _frames(reader, rollout, as_json)
        if as_json:
            if not watch:
                click.echo(frame(datetime.now(tz=UTC)))
                return
            _watch(frame, interval, lambda now, line: _print_line(line))
            return
        from controller.cli.status_screen import Terminal

        terminal = Terminal(colour=_colour_wanted())
        if not watch:
            terminal.print(frame(datetime.now(tz=UTC)))
            return
        if not terminal.is_terminal:  # piped: one frame after another, separated by a blank line
            _watch(frame, interval, lambda now, screen: terminal.print(_header(interval, now), "", screen, end="\n\n"))
            return
        terminal.start()
        try:
            _watch(frame, interval, lambda now, screen: terminal.redraw(_header(interval, now), "", screen))
        finally:
            terminal.stop()
    finally:
        reader.close()


def _frames(reader, ref: str | None, as_json: bool) -> Callable[[datetime], str | Text]:
    """A function from the time to one frame: a JSON line, or the screen. Resolves ROLLOUT once,
    up front, so that a bad one fails before anything is drawn."""
    fixed = None
    if ref is not None:
        with reader.snapshot():
            fixed = [summary.resolve(reader, ref)]

    def frame(now: datetime) -> str | Text:
        with reader.snapshot():
            ids = fixed if fixed is not None else summary.current_ids(reader)
            summaries = [summary.gather(reader, i, now) for i in ids]
        if as_json:
            from controller.cli.output import json_line

            return json_line(summary.document(summaries, now))
        from controller.cli.status_screen import layout

        return layout(summaries)

    return frame


def _watch(frame: Callable[[datetime], str | Text], interval: float,
           show: Callable[[datetime, str | Text], None]) -> None:
    """Show a frame every ``interval`` seconds until Ctrl-C (exit status 130). A frame that fails
    is shown as its error and the next one tries again; the first one fails the command."""
    first = True
    try:
        while True:
            now = datetime.now(tz=UTC)
            try:
                shown = frame(now)
            except Exception as exc:  # noqa: BLE001 - a frame that fails says why and the next one tries again
                if first:
                    raise
                shown = f"error: {exc}"
            show(now, shown)
            first = False
            time.sleep(interval)
    except KeyboardInterrupt:
        raise SystemExit(130) from None


def _header(interval: float, now: datetime) -> str:
    return f"canaryctl status · every {interval:g}s · {now:%H:%M:%S} UTC · Ctrl-C to stop"


def _print_line(line: str | Text) -> None:
    sys.stdout.write(f"{line}\n")
    sys.stdout.flush()


def _colour_wanted() -> bool:
    """Colour on a terminal only, and never with NO_COLOR set (no-color.org) or TERM=dumb."""
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"
