"""What a harness run found: breaches, final verdicts, each fault's fate; as JSON and for people.

These are records: how they are filled in, and what makes a fault or a run ``ok``, are the
rules of `controller.harness.scoring`. Until it has scored them, nothing is ok (fail closed).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from controller.analysis.verdict import Verdict
from controller.harness.faults import Fault


@dataclass(frozen=True)
class Breach:
    """A policy that failed (or asked for a rollback on missing data), ``at`` seconds into the run."""

    at: float
    verdict: Verdict
    fault: Fault | None  # the injected fault that explains it, if any

    def to_json(self) -> dict[str, Any]:
        v = self.verdict
        return {"at": round(self.at, 3), "policy": v.policy, "outcome": v.outcome.value, "action": v.action,
                "value": v.value, "threshold": v.threshold, "group": dict(v.group), "reason": v.reason,
                "expected": self.fault is not None, "fault": self.fault.text if self.fault else None}


@dataclass
class FaultResult:
    """One scheduled fault: when it was injected, which policies should catch it, what did."""

    fault: Fault
    expected: tuple[str, ...]
    must_be_caught: bool = True
    injected_at: float | None = None  # seconds into the run
    caught_by: str | None = None
    caught_outcome: str | None = None  # the catching verdict's outcome (fail, or nodata when the data stopped)
    detect_s: float | None = None
    breaches: list[str] = field(default_factory=list)  # unexpected breaches while it was on
    note: str = ""
    ok: bool = False  # it ended as expected (scored)

    def to_json(self) -> dict[str, Any]:
        return {"at": self.fault.at, "spec": self.fault.text, "expected": list(self.expected),
                "caught_by": self.caught_by, "outcome": self.caught_outcome,
                "detect_s": None if self.detect_s is None else round(self.detect_s, 3),
                "ok": self.ok, "note": self.note}


@dataclass
class HarnessResult:
    stage: str
    release: str
    duration_s: float
    simulated_s: float = 0.0
    wall_s: float = 0.0
    breaches: list[Breach] = field(default_factory=list)
    verdicts: dict[str, str] = field(default_factory=dict)  # the last release's final verdict per policy
    not_judged: dict[str, str] = field(default_factory=dict)  # policy -> why the harness cannot judge it
    faults: list[FaultResult] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # what went wrong besides verdicts (a bot crashed)
    releases_placed: int = 0
    rollout: int | None = None
    record_note: str | None = None
    ok: bool = False  # the run met expectation (scored)

    @property
    def unexpected_breaches(self) -> list[Breach]:
        return [b for b in self.breaches if b.fault is None]

    def to_json(self) -> dict[str, Any]:
        return {"stage": self.stage, "release": self.release, "duration_s": self.duration_s,
                "simulated_s": round(self.simulated_s, 3), "wall_s": round(self.wall_s, 3),
                "breaches": [b.to_json() for b in self.breaches], "verdicts": dict(sorted(self.verdicts.items())),
                "not_judged": self.not_judged, "faults": [f.to_json() for f in self.faults], "errors": self.errors,
                "releases_placed": self.releases_placed, "rollout": self.rollout, "ok": self.ok}

    def summary(self) -> list[str]:
        """The human summary: the verdicts, the breaches, the faults, and the outcome."""
        lines = [f"stage {self.stage} on the simulator: {self.release}, {_hours(self.simulated_s)} of "
                 f"{_hours(self.duration_s)} simulated in {self.wall_s:.1f} s"]
        lines.append("final verdicts (the last release placed):")
        width = max((len(name) for name in [*self.verdicts, *self.not_judged]), default=0)
        for name, verdict in sorted(self.verdicts.items()):
            lines.append(f"  {name:<{width}}  {verdict}")
        for name, why in sorted(self.not_judged.items()):
            lines.append(f"  {name:<{width}}  not judged: {why}")
        if self.breaches:
            lines.append(f"breaches ({len(self.breaches)}):")
            for b in self.breaches:
                why = f"caused by {b.fault.text}" if b.fault else "UNEXPECTED"
                lines.append(f"  {_hours(b.at)}  {b.verdict.policy} {b.verdict.outcome.value}: {b.verdict.reason} "
                             f"[{why}]")
        else:
            lines.append("breaches: none")
        for f in self.faults:
            if f.caught_by:
                fate = f"caught by {f.caught_by} ({f.caught_outcome}) after {_hours(f.detect_s or 0.0)}"
            elif f.must_be_caught:
                fate = "NOT caught"
            else:
                fate = "ridden out, no breach" if f.ok else "breaches while on: " + ", ".join(f.breaches)
            note = f"; {f.note}" if f.note else ""
            lines.append(f"fault {f.fault.text}: {fate}{note} -> {'ok' if f.ok else 'NOT AS EXPECTED'}")
        lines += [f"error: {error}" for error in self.errors]
        if self.rollout is not None:
            lines.append(f"recorded as rollout {self.rollout} (canaryctl report {self.rollout})")
        elif self.record_note:
            lines.append(f"not recorded: {self.record_note}")
        lines.append("result: " + ("ok" if self.ok else "NOT OK"))
        return lines


def _hours(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"
