"""The weekly review (checklist stage E, E3) for a person, and its verifiable archive.

`render` lays the review out as Markdown text: sections and aligned tables that read the same in a
terminal and in a Markdown viewer. `write_archive` puts the review in the report archive's format
(`report.archive.write_members`, so `canaryctl report verify` checks it):

    MANIFEST.sha256        every other member's SHA-256
    review.json            the review as `canaryctl review --json` prints it
    review.md              the review as text
    audit/excerpt.jsonl    the period's audit events, hashes included: verify checks that they chain
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from controller.store.review import ALERTS_NOT_RECORDED, PolicyFigures, Review

REVIEW_JSON = "review.json"
REVIEW_MD = "review.md"


def archive_name(review: Review) -> str:
    """The archive's file (and folder) name: ``review-SINCE-UNTIL`` in UTC."""
    return f"review-{_stamp(review.since)}-{_stamp(review.until)}"


def write_archive(target: Path, review: Review, *, force: bool = False,
                  progress: Callable[[str], None] = lambda text: None):
    """Write ``review`` to ``target`` (a `report.archive.Written`); refused if it exists unless ``force``."""
    from controller.report.archive import Member, json_bytes, jsonl, write_members
    from controller.report.document import AUDIT_EXCERPT

    excerpt = ({"seq": a.seq, "ts": a.ts.isoformat(timespec="microseconds"), "actor": a.actor, "kind": a.kind,
                "subject": a.subject, "release": a.release, "symbol": a.symbol, "payload": a.payload,
                "prev_hash": a.prev_hash, "hash": a.hash} for a in review.audit)
    members = [Member(AUDIT_EXCERPT, jsonl(excerpt)), Member(REVIEW_JSON, json_bytes(review.to_json())),
               Member(REVIEW_MD, render(review).encode())]
    return write_members(target, archive_name(review), members, mtime=int(review.until.timestamp()), force=force,
                         progress=progress)


def render(review: Review) -> str:
    """The review as Markdown text."""
    out = [f"# Weekly review: {_time(review.since)} to {_time(review.until)}", "",
           "Checklist stage E (E3): leverage metrics, bucket usage, breaches, rollbacks and alerts, and the "
           "nightly harness runs, as the controller recorded them in this period.", ""]
    if review.empty:
        out += ["**Nothing was recorded in this period**: no rollout was active, no verdict changed, nothing "
                "was rolled back and no harness run was stored.", ""]
    out += _rollouts(review)
    out += _figures("Leverage metrics", "the exchange-side leverage policies (the exchange's own record of the "
                    "account's leverage)", review.leverage)
    out += _figures("Bucket usage", "the bucket-usage policies", review.bucket_usage)
    if review.unclassified:
        out += [f"Policies with verdict changes that the policy files in {review.policies_folder} no longer "
                f"define (not classified): {', '.join(review.unclassified)}.", ""]
    out += _breaches(review) + _rollbacks(review) + _alerts(review) + _harness(review)
    out.append("Verdicts are stored when they change: a worst value is the worst of the stored changes. "
               "Times are UTC.")
    return "\n".join(out) + "\n"


def _rollouts(review: Review) -> list[str]:
    out = ["## Rollouts", ""]
    if not review.rollouts:
        return out + ["No rollout was active in this period.", ""]
    rows = [(r.id, r.release, r.pipeline, " → ".join(f"{s.name} ({s.outcome or 'under way'})" for s in r.stages) or "none",
             r.outcome, _time(r.updated_at) if r.finished else "", r.reason or "")
            for r in review.rollouts]
    return out + _table(["rollout", "release", "pipeline", "stages reached", "outcome", "finished", "reason"], rows)


def _figures(title: str, what: str, figures: Sequence[PolicyFigures]) -> list[str]:
    out = [f"## {title}", "", f"From {what}.", ""]
    if not figures:
        return out + ["No verdict of these policies changed in this period.", ""]
    rows = []
    for figure in figures:
        worst = figure.worst
        rows.append((figure.policy, figure.source, figure.metric, len(figure.changes),
                     ", ".join(f"{n} {outcome}" for outcome, n in figure.outcomes.items()),
                     "no value" if worst is None else _number(worst.value),
                     "" if worst is None else f"{worst.condition}".strip(),
                     "" if worst is None else _group(worst.group), "" if worst is None else f"rollout {worst.rollout}"))
    out += _table(["policy", "source", "metric", "changes", "verdicts", "worst value", "condition", "group", "where"],
                  rows)
    changed = [c for f in figures for c in f.changes if c.verdict != "pass"]
    if changed:
        out += ["Changes that did not pass:", ""]
        out += _table(["time", "rollout", "stage", "policy", "group", "verdict", "value", "reason"],
                      [(_time(c.at), c.rollout, c.stage or "", c.policy, _group(c.group), c.verdict, _number(c.value),
                        c.reason) for c in sorted(changed, key=lambda c: c.at)])
    return out


def _breaches(review: Review) -> list[str]:
    out = ["## Breaches", ""]
    if not review.breaches:
        return out + ["No policy breached in this period.", ""]
    return out + _table(["time", "rollout", "release", "stage", "policy", "group", "verdict", "action", "value",
                         "reason"],
                        [(_time(b.at), b.rollout, b.release, b.stage or "", b.policy, _group(b.group), b.verdict,
                          b.action or "", _number(b.value), b.reason) for b in review.breaches])


def _rollbacks(review: Review) -> list[str]:
    out = ["## Rollbacks", ""]
    if not review.rollbacks:
        return out + ["Nothing was rolled back in this period.", ""]
    return out + _table(["planned", "rollout", "release", "trigger", "policy", "steps done", "steps failed", "reason"],
                        [(_time(r.planned_at) if r.planned_at else "before the period", r.rollout or r.subject,
                          r.release or "", r.trigger or "", r.policy or "", r.steps_done, r.steps_failed,
                          r.reason or "") for r in review.rollbacks])


def _alerts(review: Review) -> list[str]:
    out = ["## Alerts", "", f"Alert firings: {ALERTS_NOT_RECORDED}.", ""]
    if not review.controller_alerts:
        return out + ["The controller raised no alert of its own (a policy with `on_breach: alert`, a wait past its "
                      "deadline) in this period.", ""]
    out += ["Alerts the controller raised itself:", ""]
    return out + _table(["time", "rollout", "release", "what", "reason"],
                        [(_time(a.at), a.rollout or "", a.release or "", a.what, a.reason)
                         for a in review.controller_alerts])


def _harness(review: Review) -> list[str]:
    out = ["## Nightly harness runs", ""]
    if not review.harness:
        return out + ["No harness run was recorded in this period (is canary-harness.timer enabled?).", ""]
    passed = sum(h.ok for h in review.harness)
    out += [f"{passed} of {len(review.harness)} runs passed.", ""]
    rows = [(_time(h.at), h.rollout or "", h.release or "", h.stage or "", "pass" if h.ok else "FAIL",
             _hours(h.simulated_s), f"{h.breaches} ({h.unexpected_breaches} unexpected)",
             f"{len(h.caught)} of {len(h.faults)}", "; ".join(f"{f.spec} by {f.caught_by}" for f in h.caught),
             "; ".join(h.errors)) for h in review.harness]
    return out + _table(["time", "rollout", "release", "stage", "result", "simulated", "breaches", "faults caught",
                         "caught", "errors"], rows)


# ---------------------------------------------------------------- layout

def _table(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    """A Markdown table with its columns aligned (pipes in cells escaped, line breaks made spaces)."""
    cells = [[_cell(c) for c in columns]] + [[_cell(c) for c in row] for row in rows]
    widths = [max(len(row[n]) for row in cells) for n in range(len(columns))]

    def line(row: Sequence[str]) -> str:
        return "| " + " | ".join(cell.ljust(width) for cell, width in zip(row, widths)) + " |"

    return [line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, cells[1:]), ""]


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return "".join(ch if ch.isprintable() else " " for ch in text).replace("|", "\\|")


def _group(group: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in group.items())


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


def _hours(seconds: float | None) -> str:
    return "" if seconds is None else f"{seconds / 3600:.1f} h"


def _time(value: datetime | None) -> str:
    return "" if value is None else value.strftime("%Y-%m-%d %H:%M:%S")


def _stamp(value: datetime) -> str:
    return value.strftime("%Y%m%dT%H%M%SZ")
