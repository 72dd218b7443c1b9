"""The stabilization checklist as data, and how each of its lines is judged from a rollout's evidence.

Policies name the line they enforce (``checklist: "C: Validate real Binance ..."``); lines no
policy can judge are attested by a sign-off, by a stage run, by the rollout's promotion or its
rollback plan, by the archive itself, or are done outside a rollout (stage E, the docs).

A line's status is one of:

    met       the evidence shows it done (the only status that ticks the box)
    breached  a policy of the line failed
    open      under way, or evidence short of done (no data, a stage cut short, a missing sign-off)
    not run   this rollout never reached the stage, or its pipeline has no such stage
    outside   not something a rollout can show; the note says where it is done
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

MET, BREACHED, OPEN, NOT_RUN, OUTSIDE = "met", "breached", "open", "not run", "outside"

STAGE_TITLES = {
    "A": "Stage A – Acceptance Criteria & Baseline",
    "B": "Stage B – Staging / Synthetic Run (48 h)",
    "C": "Stage C – Canary / Dry Run (24 h)",
    "D": "Stage D – Full Deployment",
    "E": "Stage E – Regression & Maintenance",
    "done": "Completion Criteria",
}


@dataclass(frozen=True)
class Figure:
    """One figure of a line that says several: a passing policy must judge it on its own
    (``p95 < 400 ms`` says nothing of the median)."""

    label: str
    metric: str
    aggregate: str
    bound: float
    """The policy's condition must be ``< X`` or ``<= X`` with X at most this (a stricter bound proves it too)."""

    def judged_by(self, policy: PolicyFacts) -> bool:
        if policy.metric != self.metric or policy.aggregate != self.aggregate or not policy.condition:
            return False
        match = re.fullmatch(r"\s*(<=?)\s*([0-9]*\.?[0-9]+)\s*", policy.condition)
        return match is not None and float(match.group(2)) <= self.bound


@dataclass(frozen=True)
class Line:
    key: str
    stage: str
    text: str
    judged_by: str = "policies"
    items: tuple[str, ...] = ()
    """Sign-off items (judged_by signoff), or the stages a gate needs (judged_by gate)."""
    note: str = ""
    covers: float = 0.0
    """Seconds of clock the line names ("across >=24 h", "continuous 48 h"): a stage run judged on it
    must have lasted that long, whatever the pipeline's stage duration says."""
    figures: tuple[Figure, ...] = ()
    """The figures of a line that states several, each needing its own passing policy."""
    needs_lines: bool = False
    """A gate over "all items" of its stages: every line of those stages must be met too."""


HOUR, DAY = 3600.0, 86400.0
SIGNAL_LATENCY = "strategy_signal_latency_seconds"


LINES: tuple[Line, ...] = (
    Line("A1", "A", "`strategy_leverage_mismatch_total` remains `0` across ≥24 h sandbox run.", covers=DAY),
    Line("A2", "A", "Signal-to-order latency (`strategy_signal_latency_seconds`) p50 < 150 ms, p95 < 400 ms.",
         figures=(Figure("p50 < 150 ms", SIGNAL_LATENCY, "p50", 0.150),
                  Figure("p95 < 400 ms", SIGNAL_LATENCY, "p95", 0.400))),
    Line("A3", "A", "Bucket usage metrics never exceed configured allocation +2 % headroom."),
    Line("A4", "A", "Order failure/rejection rate < 0.5 %."),
    Line("A5", "A", "No unhandled exceptions in runtime logs for ≥24 h.", covers=DAY),
    Line("A6", "A", "Audit trail captures config changes and leverage actions without gaps."),
    Line("B1", "B", "Run synthetic harness or testnet profile for continuous 48 h.", "stage_run",
         covers=2 * DAY),
    Line("B2", "B", "Verify `strategy_leverage_configured` equals `strategy_leverage_applied` for all symbols."),
    Line("B3", "B", "Confirm bucket lock/unlock cycles complete; no stale margin fractions."),
    Line("B4", "B", "Review Prometheus/Grafana dashboards for leverage, bucket, and queue metrics.", "signoff",
         ("dashboards-reviewed",)),
    Line("B5", "B", "Export and archive logs + metrics snapshots for post-run analysis.", "signoff",
         ("run-archived",)),
    Line("B-gate", "B", "Gate: All Stage A + Stage B items checked before moving to canary.", "gate", ("A", "B"),
         needs_lines=True),
    Line("C1", "C", "Deploy to live sub-account (or shadow mode) with ≤2 % capital allocation."),
    Line("C2", "C", "Validate real Binance `/fapi/v1/leverage` responses match config."),
    Line("C3", "C", "Monitor live fills for correct leverage & sizing; no unexpected liquidation margin usage."),
    Line("C4", "C", "Ensure alerting (mismatch, bucket overuse, error spikes) is active and quiet."),
    Line("C5", "C", "Compare realized vs expected PnL exposure and queue latency."),
    Line("C-gate", "C", "Gate: No critical alerts, metrics within thresholds, reviewed by owner(s).", "gate", ("C",)),
    Line("D1", "D", "Promote release with feature toggle (if available) and document version.", "promotion"),
    Line("D2", "D", "Enable full-capital trading once canary metrics validated.", "stage_run"),
    # The controller judges its policies every few seconds, more often than hourly or daily: the
    # cadence is kept by any run; the week is not.
    Line("D3", "D", "Monitor dashboards hourly for first 24 h, daily afterwards for one week.", covers=7 * DAY),
    Line("D4", "D", "Hold daily standup review; log any anomalies and resolutions.", "signoff", ("standup-review",)),
    Line("D5", "D", "Keep rollback plan ready (previous release + config snapshot).", "rollback_plan"),
    Line("E1", "E", "Schedule nightly synthetic harness run covering leverage paths.", "outside",
         note="the nightly harness timer (systemd/), not a rollout stage"),
    Line("E2", "E", "Ensure leverage/unit tests integrated into CI.", "outside", note="the CI configuration"),
    Line("E3", "E", "Weekly review of leverage metrics, bucket usage, and alert history.", "outside",
         note="a weekly review of the dashboards and of these reports"),
    Line("E4", "E", "Update documentation/README with stabilized procedures.", "outside", note="the README"),
    Line("done-1", "done", "All stages signed off.", "all_signoffs"),
    Line("done-2", "done", "Checklist archived with run artifacts.", "archive"),
    Line("done-3", "done", "File removed from repo after stabilization complete.", "outside",
         note="the repository, once stabilization is complete"),
)


# ---------------------------------------------------------------- which policy enforces which line

def _normal(text: str) -> str:
    text = text.replace("`", "").replace("≥", ">=").replace("≤", "<=").lower()
    return re.sub(r"\s+", " ", text).strip().rstrip(".")


def line_of(checklist: str) -> Line | None:
    """The line a policy's ``checklist`` text names: ``"C: Validate real ..."``; a text of the form
    ``"D: Monitor dashboards ... — C: ..."`` names its first part. A policy may quote only the part
    of a line it checks ("... p95 < 400 ms" of "... p50 < 150 ms, p95 < 400 ms"): the line of its
    stage that shares the longest start with it, if that start is most of the shorter text."""
    head = checklist.split(" — ", 1)[0]
    stage, _, text = head.partition(":")
    wanted = _normal(text)
    best, shared = None, 0
    for line in LINES:
        if line.stage == stage.strip() and line.judged_by == "policies":
            have = _normal(line.text)
            common = len(os.path.commonprefix([have, wanted]))
            if common > shared and common * 4 >= 3 * min(len(have), len(wanted)):
                best, shared = line, common
    return best


# ---------------------------------------------------------------- what a line is judged on

@dataclass(frozen=True)
class PolicyFacts:
    name: str
    checklist: str | None
    stage: str | None
    """The pipeline stage its verdicts were given in."""
    status: str
    """breached | passing | nodata | inconclusive"""
    detail: str
    metric: str | None = None
    aggregate: str | None = None
    condition: str | None = None


@dataclass(frozen=True)
class StageFacts:
    name: str
    started_at: str | None = None
    finished_at: str | None = None
    outcome: str | None = None
    """passed | forced | rolled_back; None while it runs."""
    ran_seconds: float | None = None
    duration: float = 0.0
    account: str = ""
    capital_cap: str | None = None


@dataclass(frozen=True)
class Facts:
    pipeline: str
    stages: Mapping[str, StageFacts]
    """Every stage of the pipeline, by name (``started_at`` None: not reached)."""
    policies: Sequence[PolicyFacts]
    signoffs: Mapping[str, tuple[str, str | None]]
    """``STAGE/item`` -> (who, when) for every sign-off given."""
    required_signoffs: Sequence[str]
    release: str
    status: str
    promoted_at: str | None = None
    baseline: str | None = None
    baseline_config: str | None = None
    rollback: str | None = None
    archived: bool = False
    archive_check: Mapping[str, Any] | None = None
    """An existing archive checked for this report (`archive.check_of`): its path, exists, verifies, problems."""


def fill(facts: Facts) -> list[dict]:
    """Every line of the checklist with its status and the evidence for it, in checklist order."""
    judge = _Judge(facts)
    out = []
    for line in LINES:
        status, evidence, policies = judge.line(line)
        out.append({"key": line.key, "stage": line.stage, "text": line.text, "judged_by": line.judged_by,
                    "status": status, "evidence": evidence, "policies": policies})
    return out


class _Judge:
    def __init__(self, facts: Facts) -> None:
        self.f = facts
        self.by_line: dict[str, list[PolicyFacts]] = {}
        for policy in facts.policies:
            line = line_of(policy.checklist) if policy.checklist else None
            if line is not None:
                self.by_line.setdefault(line.key, []).append(policy)

    def line(self, line: Line) -> tuple[str, list[str], list[str]]:
        policies = self.by_line.get(line.key, [])
        names = [p.name for p in policies]
        if line.judged_by == "outside":
            return OUTSIDE, [f"done outside a rollout: {line.note}"], names
        if line.judged_by == "rollback_plan":
            return (*self.rollback_plan(), names)
        if line.judged_by == "archive":
            return (*self.archive(), names)
        if line.judged_by == "all_signoffs":
            return (*self.all_signoffs(), names)
        if line.stage not in self.f.stages and not policies:
            return NOT_RUN, [f"stage {line.stage} is not in pipeline {self.f.pipeline} "
                             f"(stages: {', '.join(self.f.stages) or 'none'})"], names
        method = getattr(self, line.judged_by)
        return (*method(line, policies), names)

    # -- by kind

    def policies(self, line: Line, policies: list[PolicyFacts]) -> tuple[str, list[str]]:
        if not policies:
            stage = self.f.stages.get(line.stage)
            if stage is None or stage.started_at is None:
                return NOT_RUN, [f"stage {line.stage} was not reached"]
            return OPEN, [f"no verdict of a policy enforcing this line (stage {line.stage}'s policy file "
                          "names none, or none was evaluated)"]
        evidence = [f"{p.name} ({p.stage or '?'}): {p.detail}" for p in policies]
        if any(p.status == "breached" for p in policies):
            return BREACHED, evidence
        short = [s for s in {p.stage for p in policies} if not self._completed(s)]
        unjudged = [f for f in line.figures if not any(p.status == "passing" and f.judged_by(p) for p in policies)]
        for figure in unjudged:
            evidence.append(f"{figure.label} not shown: no passing policy judged the {figure.aggregate} of "
                            f"{figure.metric} against a bound of at most {figure.bound:g}")
        too_brief = line.covers and not short and not self._covered(line, {p.stage for p in policies})
        if all(p.status == "passing" for p in policies) and not short and not unjudged and not too_brief:
            return MET, evidence
        for name in sorted(s for s in short if s):
            evidence.append(self._cut_short(name))
        if too_brief:
            evidence.append(f"not yet met: the line asks for {_hours(line.covers)} of clock; "
                            + "; ".join(self._run(self.f.stages[name]) for name in sorted(
                                s for s in {p.stage for p in policies} if s in self.f.stages)))
        return OPEN, evidence

    def signoff(self, line: Line, policies: list[PolicyFacts]) -> tuple[str, list[str]]:
        keys = [f"{line.stage}/{item}" for item in line.items]
        # A recurring sign-off is required once per period: ``D/standup-review/day-3`` for ``standup-review``.
        required = [k for k in self.f.required_signoffs if any(k == key or k.startswith(f"{key}/") for key in keys)]
        if not required:
            stage = self.f.stages.get(line.stage)
            if stage is None or stage.started_at is None:
                return NOT_RUN, [f"stage {line.stage} was not reached"]
            return OPEN, [f"stage {line.stage} of pipeline {self.f.pipeline} asks for no sign-off "
                          f"{' or '.join(line.items)}: nobody attested this line"]
        stage = self.f.stages.get(line.stage)
        if (stage is None or stage.started_at is None) and not any(k in self.f.signoffs for k in required):
            return NOT_RUN, [f"stage {line.stage} was not reached"]
        evidence, missing = [], []
        for key in required:
            if key in self.f.signoffs:
                who, when = self.f.signoffs[key]
                evidence.append(f"{key} signed by {who}" + (f" at {when}" if when else ""))
            else:
                missing.append(key)
                evidence.append(f"{key} not signed")
        return (OPEN if missing else MET), evidence

    def stage_run(self, line: Line, policies: list[PolicyFacts]) -> tuple[str, list[str]]:
        stage = self.f.stages[line.stage]
        if stage.started_at is None:
            return NOT_RUN, [f"stage {line.stage} was not reached"]
        evidence = [self._run(stage)]
        if not self._completed(line.stage):
            return OPEN, evidence
        if not self._covered(line, {line.stage}):
            return OPEN, [*evidence, f"not yet met: the line asks for a run of {_hours(line.covers)} of clock"]
        return MET, evidence

    def gate(self, line: Line, policies: list[PolicyFacts]) -> tuple[str, list[str]]:
        if not any(self.f.stages.get(name) and self.f.stages[name].started_at for name in line.items):
            return NOT_RUN, [f"stage {' and '.join(line.items)} not reached"]
        evidence, status = [], MET
        for name in line.items:
            stage = self.f.stages.get(name)
            if stage is None:
                evidence.append(f"stage {name} is not in pipeline {self.f.pipeline}")
                status = OPEN if status == MET else status
                continue
            evidence.append(self._run(stage) if stage.started_at else f"stage {name} was not reached")
            failed = [p.name for p in self.f.policies if p.stage == name and p.status == "breached"]
            if failed:
                evidence.append(f"stage {name} breached: {', '.join(failed)}")
                status = BREACHED
            elif not self._completed(name) and status == MET:
                status = OPEN
            for key in (k for k in self.f.required_signoffs if k.startswith(f"{name}/")):
                who = self.f.signoffs.get(key)
                evidence.append(f"{key} signed by {who[0]}" if who else f"{key} not signed")
                if who is None and status == MET:
                    status = OPEN
        if line.needs_lines:
            for item in (other for other in LINES if other.stage in line.items and other.judged_by != "gate"):
                state, _, _ = self.line(item)
                if state not in (MET, OUTSIDE):
                    evidence.append(f"not met: {item.key} ({state})")
                    status = OPEN if status == MET else status
        return status, evidence

    def promotion(self, line: Line, policies: list[PolicyFacts]) -> tuple[str, list[str]]:
        if self.f.status == "promoted":
            return MET, [f"release {self.f.release} promoted" + (f" at {self.f.promoted_at}" if self.f.promoted_at
                                                                 else "")]
        return OPEN, [f"release {self.f.release} is {self.f.status}, not promoted"]

    def rollback_plan(self) -> tuple[str, list[str]]:
        if not self.f.baseline:
            return OPEN, ["no previous release ran on the baseline account when the rollout started: "
                          "a rollback leaves the account empty"]
        evidence = [f"previous release {self.f.baseline} with config snapshot {self.f.baseline_config}"]
        if self.f.rollback:
            evidence.append(self.f.rollback)
        return MET, evidence

    def archive(self) -> tuple[str, list[str]]:
        if self.f.archived:
            return MET, ["this report is archived with the audit excerpt, config snapshots, logs, verdict "
                         "values and plots; MANIFEST.sha256 lists them"]
        check = self.f.archive_check
        if check is not None and check["verifies"]:
            return MET, [f"archive {check['path']} exists and verifies ({check.get('members')} members match its "
                         "manifest; its audit excerpt chains)"]
        if check is not None:
            return OPEN, [f"archive {check['path']} does not verify: " + "; ".join(check["problems"])]
        return OPEN, ["not archived yet: `canaryctl report ROLLOUT --archive FILE.tar.gz`"]

    def all_signoffs(self) -> tuple[str, list[str]]:
        if not self.f.required_signoffs:
            return MET, [f"pipeline {self.f.pipeline} asks for no sign-off"]
        missing = [k for k in self.f.required_signoffs if k not in self.f.signoffs]
        given = [f"{k} by {self.f.signoffs[k][0]}" for k in self.f.required_signoffs if k in self.f.signoffs]
        evidence = ([f"signed: {', '.join(given)}"] if given else []) + \
                   ([f"not signed: {', '.join(missing)}"] if missing else [])
        return (OPEN if missing else MET), evidence

    # -- helpers

    def _completed(self, name: str | None) -> bool:
        stage = self.f.stages.get(name or "")
        return stage is not None and stage.outcome in ("passed", "forced")

    def _covered(self, line: Line, stages: set[str | None]) -> bool:
        """Whether a completed run of one of ``stages`` lasted the clock time the line names."""
        runs = [self.f.stages[name].ran_seconds for name in stages if name in self.f.stages and self._completed(name)]
        return not line.covers or any(ran is not None and ran >= line.covers for ran in runs)

    def _run(self, stage: StageFacts) -> str:
        ran = f"{stage.ran_seconds:.0f} s" if stage.ran_seconds is not None else "?"
        how = {"passed": "passed", "forced": "promoted by force", "rolled_back": "rolled back",
               None: "still running"}.get(stage.outcome, stage.outcome)
        cap = f", capital cap {stage.capital_cap}" if stage.capital_cap else ""
        return (f"stage {stage.name} on account {stage.account}{cap}: ran {ran} of {stage.duration:.0f} s "
                f"from {stage.started_at}, {how}")

    def _cut_short(self, name: str) -> str:
        stage = self.f.stages.get(name)
        if stage is None or stage.started_at is None:
            return f"stage {name} was not reached"
        return f"not yet met: {self._run(stage)}"


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:g} h"
