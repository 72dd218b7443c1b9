"""canaryctl status: is the canary healthy? One screen, from the store, in a blink.

What it shows per rollout: release and state; the baseline (the release live on the stage's
baseline account); the stage and the time left; the capital share against the stage's cap;
each policy of the stage with its latest verdict, value against threshold, trend (the values
of its recent verdict changes) and gate standing; pending sign-offs and unanswered commands;
the last breach; the last rollback with its steps; and the operator's next move.

It must start fast (under 300 ms on the default SQLite store: `bench/status.py`), so this module
imports neither SQLAlchemy nor pydantic nor rich: the data comes through
`controller.store.readonly` and `controller.rollout.summary`, and the screen is drawn here.

``--json`` prints one object per refresh, ``{"version": 1, "now": ISO, "rollouts": [...]}``; each
rollout is `controller.rollout.summary.Summary.to_json`: id, release, state, reason, pipeline,
updated_at, baseline {release, live, environment, account}, stage {name, title, index, count,
environment, account, duration_seconds, started_at, ends_at, remaining_seconds, deadline_at,
finished_at, outcome}, capital_share {cap, measured, policy, at}, policies [{policy, group,
verdict, value, threshold, condition, action, reason, at, samples, window_seconds, trend, gate,
clean_at}], signoffs {required, pending, signed}, pending_commands [{id, kind, actor,
created_at}], last_breach (a policy entry or null), last_rollback ({trigger, reason,
planned_at, done, total, current, steps [{position, name, account, state, attempts, error,
started_at, finished_at}]} or null), last_verdict_at. Times are ISO 8601 UTC; fields are only
ever added (a removal or a change of meaning raises ``version``).
"""

from __future__ import annotations

import os
import re
import sys
import time
from datetime import UTC, datetime

import click

from controller.store import summary as sm

_SPARKS = "▁▂▃▄▅▆▇█"
_STYLES = {"bold": "1", "dim": "2", "red": "31", "green": "32", "yellow": "33", "magenta": "35", "cyan": "36",
           "bad": "1;31"}
_VERDICT_STYLE = {"pass": "green", "fail": "bad", "nodata": "yellow", "inconclusive": "magenta"}
_STATE_STYLE = {"running": "green", "promoted": "green", "pending": "cyan", "promoting": "cyan",
                "awaiting_signoff": "yellow", "paused": "yellow", "rolling_back": "bad", "rolled_back": "red",
                "failed": "bad"}
_STEP_MARK = {"done": "✓", "failed": "✗", "running": "▶", "pending": "·"}
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_OPERATOR = re.compile(r"^\s*(<=|>=|==|!=|<|>)")


@click.command("status")
@click.argument("rollout", metavar="[ROLLOUT]", required=False)
@click.option("--watch", is_flag=True, help="Redraw every --interval seconds until Ctrl-C.")
@click.option("--interval", type=click.FloatRange(min=0.1), default=2.0, show_default=True, metavar="S",
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
    reader = _open_reader()
    try:
        frame = _frames(reader, rollout, as_json, colour=not as_json and _colour_wanted())
        if not watch:
            click.echo(frame(datetime.now(tz=UTC)))
            return
        _watch(frame, interval, tty=sys.stdout.isatty() and not as_json, as_json=as_json)
    finally:
        reader.close()


def _open_reader():
    """The store the global options name, as `cli.context.database_url` resolves it, without
    importing SQLAlchemy (cli.context does) unless the store is not SQLite."""
    from controller.store.readonly import open_reader

    settings = click.get_current_context().find_root().obj
    url, password = settings.db_url, None
    if settings.config_path is not None:
        from controller.config.daemon import load_daemon_config

        config = load_daemon_config(settings.config_path)
        url = url or config.database.url
        if config.database.password is not None:
            password = config.database.password.resolve()
    return open_reader(url, password=password)


def _frames(reader, ref: str | None, as_json: bool, *, colour: bool):
    """A function from the time to the text of one frame. Resolves ROLLOUT once, up front,
    so that a bad one fails before anything is drawn."""
    fixed = None
    if ref is not None:
        with reader.snapshot():
            fixed = [sm.resolve(reader, ref)]

    def frame(now: datetime) -> str:
        with reader.snapshot():
            ids = fixed if fixed is not None else sm.current_ids(reader)
            summaries = [sm.gather(reader, i, now) for i in ids]
        if as_json:
            from controller.cli.output import json_line

            return json_line(sm.document(summaries, now))
        paint = _Painter(colour)
        if not summaries:
            return "no rollouts yet; start one with `canaryctl rollout start VERSION`"
        return "\n\n".join("\n".join(_screen(s, paint)) for s in summaries)

    return frame


def _watch(frame, interval: float, *, tty: bool, as_json: bool) -> None:
    out = sys.stdout
    first = True
    if tty:
        out.write("\x1b[?25l\x1b[2J")  # hide the cursor, clear once
    try:
        while True:
            now = datetime.now(tz=UTC)
            try:
                text = frame(now)
            except Exception as exc:  # noqa: BLE001 - a frame that fails says why and the next one tries again
                if first:
                    raise
                text = f"error: {exc}"
            if not as_json:
                text = f"canaryctl status · every {interval:g}s · {now:%H:%M:%S} UTC · Ctrl-C to stop\n\n{text}"
            if tty:
                width = os.get_terminal_size(out.fileno()).columns or 10_000  # a new pty may say 0
                out.write("\x1b[H" + "".join(_clip(line, width) + "\x1b[K\n" for line in text.split("\n")) + "\x1b[J")
            else:
                out.write(text + ("\n" if as_json else "\n\n"))
            out.flush()
            first = False
            time.sleep(interval)
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    finally:
        if tty:
            out.write("\x1b[?25h")
            out.flush()


# ---------------------------------------------------------------- one rollout's screen

def _screen(s: sm.Summary, paint: _Painter) -> list[str]:
    stage = s.stage
    lines = [f"{paint('rollout ' + str(s.id), 'bold')} · release {paint(s.release, 'bold')} · "
             f"{paint(s.state, _STATE_STYLE.get(s.state))} · pipeline {s.pipeline}"
             + (f" · last verdict {_ago(s.now, s.last_verdict_at)}" if s.last_verdict_at else "")]

    def row(label: str, text: str) -> None:
        lines.append(f"  {label:<14}{text}")

    if s.reason:
        row("reason", s.reason)
    if s.baseline_live:
        row("baseline", f"{s.baseline} live on {stage.environment}/{stage.baseline_account}" if s.baseline
            else f"nothing live on {stage.environment}/{stage.baseline_account}")
    else:
        row("baseline", f"{s.baseline or 'none'} (the release this rollout replaces; stage {stage.name} has no "
                        "baseline account)")
    row("stage", _stage_text(s, paint))
    row("capital", _capital_text(s, paint))
    row("sign-offs", _signoff_text(s, paint))
    for command in s.pending_commands:
        waited = (s.now - command.created_at).total_seconds()
        row("queued", f"{command.kind} (command {command.id}) by {command.actor}, {_span(waited)} ago"
                      + (paint(" – not answered: is `canaryctl run` up?", "yellow") if waited > 5 else ""))
    lines.append("")
    lines.extend(_policy_table(s, paint))
    if s.last_breach:
        b = s.last_breach
        lines.append("")
        row("last breach", f"{paint(b.policy + _group(b.group), 'bold')} {paint(b.verdict, 'bad')} "
                           f"{_num(b.value)} vs {_threshold(b)} at {b.at:%Y-%m-%d %H:%M:%S} UTC"
                           + (f" ({_ago(s.now, b.at)})" if b.at <= s.now else "") + (f": {b.reason}" if b.reason else "")
                           + (f" → {b.action}" if b.action else ""))
    if s.last_rollback:
        lines.extend(_rollback_lines(s, paint))
    hint = _next_move(s)
    if hint:
        lines.append("")
        row("next", paint(hint, "cyan"))
    return lines


def _stage_text(s: sm.Summary, paint: _Painter) -> str:
    stage = s.stage
    text = f"{paint(stage.name, 'bold')} ({stage.index + 1}/{stage.count})"
    if stage.title:
        text += f" {stage.title}"
    text += f" · on {stage.environment}/{stage.account}"
    if s.remaining is not None:
        if s.remaining > 0:
            text += f" · {paint(_span(s.remaining) + ' left', 'bold')} of {_span(stage.duration)}" \
                    f" (ends {stage.ends_at:%Y-%m-%d %H:%M:%S} UTC)"
        else:
            text += f" · stage time up ({_span(stage.duration)}); progress deadline " \
                    f"{stage.deadline_at:%Y-%m-%d %H:%M:%S} UTC"
    elif stage.started_at is None and s.state in ("pending", "promoting"):
        text += f" · not placed yet ({_span(stage.duration)} once placed)"
    elif stage.finished_at is not None:
        text += f" · ended {stage.finished_at:%Y-%m-%d %H:%M:%S} UTC ({stage.outcome})"
    return text


def _capital_text(s: sm.Summary, paint: _Painter) -> str:
    cap = s.stage.capital_cap
    measured = s.capital_share
    if cap is None and measured is None:
        return "no cap at this stage"
    text = "cap " + (f"{(cap * 100).normalize():f} %" if cap is not None else "none")
    if measured is None:
        return text + " · measured: no capital-share verdict yet"
    if measured.value is None:
        return text + f" · measured: {paint(measured.verdict, _VERDICT_STYLE.get(measured.verdict))} " \
                      f"({measured.reason or measured.policy})"
    return text + f" · measured {paint(f'{measured.value * 100:.2f} %', _VERDICT_STYLE.get(measured.verdict))}" \
                  f" ({measured.policy}, {_ago(s.now, measured.at)})"


def _signoff_text(s: sm.Summary, paint: _Painter) -> str:
    stage = s.stage
    if not stage.signoffs:
        return f"none at stage {stage.name}"
    signed = [f"{item} by {s.signed[f'{stage.name}/{item}']}" for item in stage.signoffs
              if f"{stage.name}/{item}" in s.signed]
    parts = []
    if s.pending_signoffs:
        parts.append(paint("pending: " + ", ".join(s.pending_signoffs), "yellow"))
    if signed:
        parts.append("signed: " + ", ".join(signed))
    return " · ".join(parts)


def _policy_table(s: sm.Summary, paint: _Painter) -> list[str]:
    if not s.policies:
        return ["  no verdicts yet for this stage (verification starts once the release is placed)"]
    header = ["POLICY", "VERDICT", "VALUE", "THRESHOLD", "TREND", "GATE", "SINCE", ""]
    judged = s.state in sm.JUDGED  # a finished stage has no gate to open
    rows = []
    for p in s.policies:
        note = p.reason if p.verdict != "pass" else ""
        if p.verdict != "pass" and p.action:
            note = f"{note} → {p.action}" if note else f"→ {p.action}"
        rows.append([p.policy + _group(p.group), p.verdict, _num(p.value), _threshold(p), _trend(p.trend),
                     _gate(p, s.now) if judged else "", _ago(s.now, p.at), note])
    keep = [i for i in range(len(header)) if i != 5 or any(r[5] for r in rows)]
    widths = {i: max(len(r[i]) for r in [header, *rows]) for i in keep}
    styles = {1: lambda p: _VERDICT_STYLE.get(p.verdict), 5: lambda p: {"spoiled": "red", "clean": "green"}
              .get(p.gate or ""), 7: lambda p: "dim"}
    lines = ["  " + "  ".join(paint(header[i].ljust(widths[i]), "dim") for i in keep).rstrip()]
    for p, r in zip(s.policies, rows, strict=True):
        cells = [paint(r[i].ljust(widths[i]) if i != 7 else r[i], styles[i](p) if i in styles else None) for i in keep]
        lines.append(("  " + "  ".join(cells)).rstrip())
    return lines


def _gate(p: sm.PolicyLine, now: datetime) -> str:
    if p.gate == "passing" and p.clean_at is not None:
        return f"in {_span((p.clean_at - now).total_seconds())}"
    return p.gate or ""


def _rollback_lines(s: sm.Summary, paint: _Painter) -> list[str]:
    rb = s.last_rollback
    current = rb.current
    progress = f"{rb.done}/{len(rb.steps)} steps done"
    if current is not None:
        progress += f", {current.name} {current.state}"
    why = f" · {rb.trigger}: {rb.reason}" if rb.reason else ""
    at = f" · planned {rb.planned_at:%Y-%m-%d %H:%M:%S} UTC" if rb.planned_at else ""
    style = "green" if current is None else ("bad" if current.state == "failed" else "yellow")
    lines = ["", f"  {'last rollback':<14}{paint(progress, style)}{why}{at}"]
    width = max(len(step.name) for step in rb.steps)
    for step in rb.steps:
        mark = paint(_STEP_MARK.get(step.state, "?"), {"done": "green", "failed": "bad", "running": "yellow"}
                     .get(step.state))
        attempts = f"{step.attempts} attempt{'s' if step.attempts != 1 else ''}" if step.attempts else ""
        took = ""
        if step.started_at and step.finished_at:
            took = f"{(step.finished_at - step.started_at).total_seconds() * 1000:.0f} ms"
        detail = "  ".join(x for x in (step.state, attempts, took) if x)
        lines.append(f"    {mark} {step.name.ljust(width)}  {step.account or '':<10} {detail}"
                     + (paint(f"  {step.error}", "red") if step.error else ""))
    return lines


def _next_move(s: sm.Summary) -> str | None:
    ref, stage = s.id, s.stage.name
    if s.state == "failed":
        step = s.last_rollback.current.name if s.last_rollback and s.last_rollback.current else "the failed step"
        return f"canaryctl rollback {ref} --reason TEXT resumes the rollback at {step}"
    if s.pending_signoffs and s.state in sm.JUDGED:
        return f"canaryctl signoff {ref} {stage} --by NAME (pending: {', '.join(s.pending_signoffs)})"
    if s.state == "paused":
        return f"canaryctl resume {ref}; or promote {ref} --force --reason TEXT; or rollback {ref} --reason TEXT"
    if s.state == "awaiting_signoff":
        return f"canaryctl promote {ref}"
    return None


# ---------------------------------------------------------------- small formats

class _Painter:
    def __init__(self, colour: bool) -> None:
        self.colour = colour

    def __call__(self, text: str, style: str | None) -> str:
        if not self.colour or not style:
            return text
        return f"\x1b[{_STYLES[style]}m{text}\x1b[0m"


def _colour_wanted() -> bool:
    """Colour on a terminal only, and never with NO_COLOR set (no-color.org) or TERM=dumb."""
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"


def _clip(line: str, width: int) -> str:
    """The line cut to ``width`` visible characters, colour codes kept (a wrapped line would
    break the redraw in place)."""
    visible, out, pos = 0, [], 0
    for match in _ANSI.finditer(line):
        text = line[pos:match.start()]
        out.append(text[:max(0, width - visible)])
        visible += len(text)
        out.append(match.group())
        pos = match.end()
    out.append(line[pos:][:max(0, width - visible)])
    return "".join(out)


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


def _ago(now: datetime, then: datetime | None) -> str:
    if then is None:
        return ""
    seconds = (now - then).total_seconds()
    return f"{_span(seconds)} ago" if seconds >= 0 else "just now"


def _num(value: float | None) -> str:
    return "–" if value is None else f"{value:.4g}"


def _threshold(p: sm.PolicyLine) -> str:
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
