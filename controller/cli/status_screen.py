"""The `canaryctl status` screen: the layout of one rollout's summary, styled with rich, and the
terminal it is drawn on (once, or redrawn in place under --watch).

Imported only to draw: `canaryctl status --json` never loads rich.
"""

from __future__ import annotations

import re
import sys
from datetime import datetime
from typing import TextIO

from rich.console import Console
from rich.control import Control
from rich.segment import ControlType
from rich.text import Text

from controller.store import TERMINAL, summary
from controller.store.summary import PolicyLine, Summary, WebhookLine

_SPARKS = "▁▂▃▄▅▆▇█"
BAD = "bold red"
_VERDICT_STYLE = {"pass": "green", "pending": "yellow", "fail": BAD, "nodata": "yellow", "inconclusive": "magenta"}
_STATE_STYLE = {"running": "green", "promoted": "green", "pending": "cyan", "promoting": "cyan",
                "awaiting_signoff": "yellow", "paused": "yellow", "rolling_back": BAD, "rolled_back": "red",
                "failed": BAD, "dry_run_done": "cyan"}
_GATE_STYLE = {"spoiled": "red", "clean": "green"}
_STEP_MARK = {"done": "✓", "failed": "✗", "running": "▶", "pending": "·"}
_STEP_STYLE = {"done": "green", "failed": BAD, "running": "yellow"}
_OPERATOR = re.compile(r"^\s*(<=|>=|==|!=|<|>)")
_ERASE_TO_END_OF_LINE = Control((ControlType.ERASE_IN_LINE, 0))
_ERASE_LINE = Control((ControlType.ERASE_IN_LINE, 2))
NO_ROLLOUTS = "no rollouts yet; start one with `canaryctl rollout start VERSION`"


def layout(summaries: list[Summary]) -> Text:
    """The whole screen: each rollout's lines, rollouts separated by a blank line."""
    if not summaries:
        return Text(NO_ROLLOUTS)
    return Text("\n\n").join(Text("\n").join(_rollout(s)) for s in summaries)


class Terminal:
    """Standard output as the screen is drawn on it: styled only when ``colour`` is on; on a
    terminal, a frame can be redrawn in place from the top, each line cut to the width (a
    wrapped line would break the redraw)."""

    def __init__(self, *, colour: bool, file: TextIO | None = None) -> None:
        file = file if file is not None else sys.stdout
        self.console = Console(file=file, force_terminal=file.isatty(), color_system="standard" if colour else None,
                               markup=False, emoji=False, highlight=False, soft_wrap=True)
        self._height = 0  # lines of the frame drawn last, to erase what a shorter frame leaves below

    @property
    def is_terminal(self) -> bool:
        return self.console.is_terminal

    def print(self, *lines: str | Text, end: str = "\n") -> None:
        """Print the lines as they are (not cut to the width)."""
        self.console.print(Text("\n").join(Text(line) if isinstance(line, str) else line for line in lines), end=end)

    def start(self) -> None:
        """Hide the cursor and clear the screen once."""
        self.console.show_cursor(False)
        self.console.control(Control.clear())

    def redraw(self, *lines: str | Text) -> None:
        """Draw the lines over the previous frame, from the top left, in one write."""
        rows = [row for line in lines for row in (Text(line) if isinstance(line, str) else line).split("\n")]
        with self.console:  # buffered: the frame reaches the terminal whole
            self.console.control(Control.home())
            for row in rows:
                self.console.print(row, end="", crop=True, no_wrap=True, overflow="crop", soft_wrap=False)
                self.console.control(_ERASE_TO_END_OF_LINE)
                self.console.line()
            for _ in range(self._height - len(rows)):
                self.console.control(_ERASE_LINE)
                self.console.line()
        self._height = len(rows)

    def stop(self) -> None:
        """Show the cursor again."""
        self.console.show_cursor(True)


# ---------------------------------------------------------------- one rollout's screen

def _rollout(s: Summary) -> list[Text]:
    stage = s.stage
    lines = [Text.assemble((f"rollout {s.id}", "bold"), " · release ", (s.release, "bold"), " · ",
                           (s.status, _STATE_STYLE.get(s.status)), f" · pipeline {s.pipeline_name}",
                           f" · last verdict {_ago(s.now, s.last_verdict_at)}" if s.last_verdict_at else "")]

    def row(label: str, *text: str | Text | tuple[str, str | None]) -> None:
        lines.append(Text.assemble(f"  {label:<14}", *text))

    if s.reason:
        row("reason", s.reason)
    if s.baseline_live:
        row("baseline", f"{s.live_baseline} live on {stage.environment}/{stage.baseline_account}" if s.live_baseline
            else f"nothing live on {stage.environment}/{stage.baseline_account}")
    else:
        row("baseline", f"{s.baseline or 'none'} (the release this rollout replaces; stage {stage.name} has no "
                        "baseline account)")
    row("stage", _stage_text(s))
    if s.status not in TERMINAL:
        row("owner", *_owner_text(s))
    if s.waiting_since is not None:
        row("waiting", *_waiting_text(s))
    row("capital", _capital_text(s))
    row("sign-offs", _signoff_text(s))
    for anomaly in s.open_anomalies:
        row("anomaly", (f"{anomaly.id} open", "yellow"), " · blocks promotion" if s.anomalies_block else "", f" · by {anomaly.actor} at {anomaly.at:%Y-%m-%d %H:%M:%S} "
            f"UTC ({_ago(s.now, anomaly.at)}), stage {anomaly.stage}: {anomaly.text}")
    for command in s.pending_commands:
        waited = (s.now - command.created_at).total_seconds()
        row("queued", f"{command.kind} (command {command.id}) by {command.actor}, {_span(waited)} ago",
            (" – not answered: is `canaryctl run` up?", "yellow") if waited > 5 else "")
    lines.append(Text())
    lines.extend(_policy_table(s))
    if s.last_breach:
        b = s.last_breach
        lines.append(Text())
        row("last breach", (b.policy + _group(b.group), "bold"), " ", (b.verdict, BAD),
            f" {_num(b.value)} vs {_threshold(b)} at {b.at:%Y-%m-%d %H:%M:%S} UTC"
            + (f" ({_ago(s.now, b.at)})" if b.at <= s.now else "") + (f": {b.reason}" if b.reason else "")
            + (f" → {b.action}" if b.action else ""))
    for dry in s.dry_run:  # judged and never acted on: said as what it would have done
        row("dry run", (dry.policy, "bold"), f" would have {dry.would}", f" ({dry.count}x, last "
            f"{dry.last:%Y-%m-%d %H:%M:%S} UTC): {dry.reason}; not acted on (dry_run: true)")
    # -- dry-run stage: its decision, said as one never acted on
    if s.stage.dry_run or s.would_have:
        lines.extend(_dry_run_stage_lines(s))
    if s.last_rollback:
        lines.extend(_rollback_lines(s))
    for hook in s.webhooks:
        row("webhook", *_webhook_text(s, hook))
    hint = _next_move(s)
    if hint:
        lines.append(Text())
        row("next", (hint, "cyan"))
    return lines


def _dry_run_stage_lines(s: Summary) -> list[Text]:
    """``dry run``: what the dry-run stage would have done (or that it has not decided yet), never acted on."""
    would = s.would_have
    if would is None:
        return [Text.assemble(f"  {'dry run':<14}", (f"stage {s.stage.name} is a dry run", "cyan"),
                              ": judged, nothing acted on; no decision yet")]
    evidence = f" ({would.policy}: {_num(would.value)} vs {_num(would.threshold)})" if would.policy else ""
    return [Text.assemble(f"  {'dry run':<14}", (f"would have {would.would}", BAD if would.would == "rolled back"
                                                  else "green" if would.would == "promoted" else "yellow"),
                          f" at {would.at:%Y-%m-%d %H:%M:%S} UTC{evidence}: {would.reason}; not acted on")]


def _webhook_text(s: Summary, hook: WebhookLine) -> tuple[str | tuple[str, str | None], ...]:
    """``host/path: ok (promoted, delivered …)`` or ``failing since … after N attempts: error``."""
    where = f"{hook.webhook} ({hook.event}): "
    tries = f"{hook.attempts} attempt{'s' if hook.attempts != 1 else ''}"
    if hook.state == "delivered":
        return where, ("ok", "green"), f", delivered {_ago(s.now, hook.delivered_at)} after {tries}"
    why = f": {hook.error}" if hook.error else ""
    if hook.failing_since is None:
        return where, ("sending", "yellow"), f" ({tries} so far){why}"
    failing = f"failing since {hook.failing_since:%Y-%m-%d %H:%M:%S} UTC ({_ago(s.now, hook.failing_since)})"
    more = ", retrying" if hook.state == "sending" else ", given up"
    return where, (failing, BAD), f" after {tries}{more}{why}"


def _stage_text(s: Summary) -> Text:
    stage = s.stage
    text = Text.assemble((stage.name, "bold"), f" ({stage.index + 1}/{stage.count})")
    if stage.title:
        text.append(f" {stage.title}")
    if stage.dry_run:
        text.append(" · dry run", "cyan")
    text.append(f" · on {stage.environment}/{stage.account}")
    if s.remaining is not None:
        if s.remaining > 0:
            text.append_text(Text.assemble(" · ", (_span(s.remaining) + " left", "bold"),
                                           f" of {_span(stage.duration)} (ends {stage.ends_at:%Y-%m-%d %H:%M:%S} UTC)"))
        else:
            text.append(f" · stage time up ({_span(stage.duration)}); progress deadline "
                        f"{stage.deadline_at:%Y-%m-%d %H:%M:%S} UTC")
    elif stage.started_at is None and s.status in ("pending", "promoting"):
        text.append(f" · not placed yet ({_span(stage.duration)} once placed)")
    elif stage.finished_at is not None:
        text.append(f" · ended {stage.finished_at:%Y-%m-%d %H:%M:%S} UTC ({stage.outcome})")
    return text


def _waiting_text(s: Summary) -> tuple[str | tuple[str, str | None], ...]:
    """``waiting since … (deadline in …)``: how long the rollout has waited for a person, and what
    its stage does at the deadline."""
    since, deadline, left = s.waiting_since, s.waiting_deadline_at, s.waiting_left
    then = "rolls back" if s.stage.on_waiting_deadline == "rollback" else "alerts"
    opening = f"waiting since {since:%Y-%m-%d %H:%M:%S} UTC ({_ago(s.now, since)}) "
    if left > 0:
        return opening, (f"(deadline in {_span(left)}", "yellow" if left < 3600 else None), f", then {then})"
    done = "rolling back" if s.stage.on_waiting_deadline == "rollback" else "alerted"
    return opening, (f"(deadline passed {_ago(s.now, deadline)}: overdue, {done})", BAD)


def _signer(s: Summary, name: str) -> str:
    """The name a sign-off claimed, and the operating-system user that gave it where they differ."""
    os_user = s.signer_os_users.get(name)
    return name if os_user is None or os_user == name else f"{name} (os user {os_user})"


def _capital_text(s: Summary) -> Text:
    cap = s.stage.capital_cap
    measured = s.capital_share
    if cap is None and measured is None:
        return Text("no cap at this stage")
    text = Text("cap " + (f"{(cap * 100).normalize():f} %" if cap is not None else "none"))
    if measured is None:
        return text.append(" · measured: no capital-share verdict yet")
    style = _VERDICT_STYLE.get(measured.verdict)
    if measured.value is None:
        return text.append_text(Text.assemble(" · measured: ", (measured.verdict, style),
                                              f" ({measured.reason or measured.policy})"))
    return text.append_text(Text.assemble(" · measured ", (f"{measured.value * 100:.2f} %", style),
                                          f" ({measured.policy}, {_ago(s.now, measured.at)})"))


def _signoff_text(s: Summary) -> Text:
    stage = s.stage
    if not stage.signoffs:
        return Text(f"none at stage {stage.name}")
    signed = [f"{item} by {_signer(s, s.signed[f'{stage.name}/{item}'])}" for item in stage.signoffs
              if f"{stage.name}/{item}" in s.signed]
    parts = []
    if s.overdue_signoffs:
        parts.append(Text("overdue: " + ", ".join(s.overdue_signoffs), "red"))
    if s.pending_signoffs:
        parts.append(Text("pending: " + ", ".join(s.pending_signoffs), "yellow"))
    if signed:
        parts.append(Text("signed: " + ", ".join(signed)))
    return Text(" · ").join(parts)


def _policy_table(s: Summary) -> list[Text]:
    if not s.policies:
        return [Text("  no verdicts yet for this stage (verification starts once the release is placed)")]
    header = ["POLICY", "VERDICT", "VALUE", "THRESHOLD", "TREND", "GATE", "SINCE", ""]
    judged = s.status in summary.JUDGED  # a finished stage has no gate to open
    rows = []
    for p in s.policies:
        note = _pending_text(p, s.now) if p.pending else (p.reason if p.shown != "pass" else "")
        if p.verdict != "pass" and p.action:
            note = f"{note} → {p.action}" if note else f"→ {p.action}"
        rows.append([p.policy + _group(p.group), p.shown, _num(p.value), _threshold(p), _trend(p.trend),
                     _gate(p, s.now) if judged else "", _ago(s.now, p.at), note])
    keep = [i for i in range(len(header)) if i != 5 or any(r[5] for r in rows)]
    widths = {i: max(len(r[i]) for r in [header, *rows]) for i in keep}
    styles = {1: lambda p: _VERDICT_STYLE.get(p.shown), 5: lambda p: _GATE_STYLE.get(p.gate or ""),
              7: lambda p: "dim"}
    lines = [_row([Text(header[i].ljust(widths[i]), "dim") for i in keep])]
    for p, r in zip(s.policies, rows, strict=True):
        cells = [r[i].ljust(widths[i]) if i != 7 else r[i] for i in keep]
        lines.append(_row([Text(cell, (styles[i](p) if i in styles else None) or "") for i, cell in zip(keep, cells)]))
    return lines


def _pending_text(p: PolicyLine, now: datetime) -> str:
    """Since when a pending policy's condition has been false, and when its ``for`` runs out."""
    since = (f"past the threshold since {p.pending_since:%H:%M:%S} UTC ({_ago(now, p.pending_since)})"
             if p.pending_since is not None else "past the threshold")
    left = p.fails_in(now)
    if left is None:
        return since
    if left > 0:
        return f"{since}; fails in {_span(left)} unless it recovers"
    return f"{since}; its `for` ran out {_ago(now, p.fails_at)}: the next verdict is not stored yet"


def _row(cells: list[Text]) -> Text:
    line = Text("  ").join([Text(""), *cells])
    line.rstrip()
    return line


def _gate(p: PolicyLine, now: datetime) -> str:
    if p.gate == "passing" and p.clean_at is not None:
        return f"in {_span((p.clean_at - now).total_seconds())}"
    return p.gate or ""


def _rollback_lines(s: Summary) -> list[Text]:
    rollback = s.last_rollback
    current = rollback.current
    progress = f"{rollback.done}/{len(rollback.steps)} steps done"
    if current is not None:
        progress += f", {current.name} {current.state}"
    why = f" · {rollback.trigger}: {rollback.reason}" if rollback.reason else ""
    at = f" · planned {rollback.planned_at:%Y-%m-%d %H:%M:%S} UTC" if rollback.planned_at else ""
    style = "green" if current is None else (BAD if current.state == "failed" else "yellow")
    lines = [Text(), Text.assemble(f"  {'last rollback':<14}", (progress, style), why, at)]
    width = max(len(step.name) for step in rollback.steps)
    for step in rollback.steps:
        attempts = f"{step.attempts} attempt{'s' if step.attempts != 1 else ''}" if step.attempts else ""
        took = ""
        if step.started_at and step.finished_at:
            took = f"{(step.finished_at - step.started_at).total_seconds() * 1000:.0f} ms"
        detail = "  ".join(x for x in (step.state, attempts, took) if x)
        lines.append(Text.assemble("    ", (_STEP_MARK.get(step.state, "?"), _STEP_STYLE.get(step.state)),
                                   f" {step.name.ljust(width)}  {step.account or '':<10} {detail}",
                                   (f"  {step.error}", "red") if step.error else ""))
    return lines


def _next_move(s: Summary) -> str | None:
    ref, stage = s.id, s.stage.name
    if s.status == "failed":
        step = s.last_rollback.current.name if s.last_rollback and s.last_rollback.current else "the failed step"
        return f"canaryctl rollback {ref} --reason TEXT resumes the rollback at {step}"
    if s.pending_signoffs and s.status in summary.JUDGED:
        return f"canaryctl signoff {ref} {stage} --by NAME (pending: {', '.join(s.pending_signoffs)})"
    if s.status == "paused":
        return f"canaryctl resume {ref}; or promote {ref} --force --reason TEXT; or rollback {ref} --reason TEXT"
    if s.status == "awaiting_signoff" and s.open_anomalies and s.anomalies_block:
        return (f"canaryctl note {ref} --resolves {s.open_anomalies[0].id} --text TEXT; or promote {ref} --force "
                "--reason TEXT")
    if s.status == "awaiting_signoff":
        return f"canaryctl promote {ref}"
    return None


# ---------------------------------------------------------------- small formats

def _span(seconds: float) -> str:
    seconds = int(max(0.0, seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def _owner_text(s: Summary) -> tuple[str | tuple[str, str | None], ...]:
    """Which daemon acts on the rollout and since when; a lease unrenewed is said in red."""
    owner = s.owner
    if owner is None:
        return ("no daemon has claimed it yet", "yellow"),
    held = f"{owner.owner} since {owner.since:%Y-%m-%d %H:%M:%S} UTC (epoch {owner.epoch})" if owner.since \
        else f"{owner.owner} (epoch {owner.epoch})"
    if owner.expired(s.now):
        return held, (f" · lease expired {_ago(s.now, owner.expires_at)}: another daemon takes it over", "red")
    return (held,)


def _ago(now: datetime, then: datetime | None) -> str:
    if then is None:
        return ""
    seconds = (now - then).total_seconds()
    return f"{_span(seconds)} ago" if seconds >= 0 else "just now"


def _num(value: float | None) -> str:
    return "–" if value is None else f"{value:.4g}"


def _threshold(p: PolicyLine) -> str:
    """``<= 0.02`` for ``<= capital_cap`` at 0.02: the operator of the condition, the threshold it
    resolved to; the condition itself when there was nothing to resolve against (no data)."""
    match = _OPERATOR.match(p.condition)
    if p.threshold is None or not match:
        return p.condition
    return f"{match.group(1)} {p.threshold}"


def _trend(values: tuple[float, ...]) -> str:
    """A sparkline of the values (a flat one sits mid-height) and where the last change went."""
    if len(values) < 2:
        return ""
    low, high = min(values), max(values)
    span = high - low
    bars = "".join(_SPARKS[3 if span == 0 else round((v - low) / span * (len(_SPARKS) - 1))] for v in values)
    arrow = "→" if values[-1] == values[-2] else ("↑" if values[-1] > values[-2] else "↓")
    return f"{bars} {arrow}"


def _group(group: dict[str, str]) -> str:
    return f" [{', '.join(f'{k}={v}' for k, v in group.items())}]" if group else ""
