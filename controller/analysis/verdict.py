"""Verdicts: four outcomes, never two, each with the evidence behind it."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from controller.analysis.observation import Labels


class Outcome(enum.StrEnum):
    PASS = "pass"
    FAIL = "fail"
    NODATA = "nodata"
    INCONCLUSIVE = "inconclusive"


# Which group's verdict speaks for a policy evaluated per symbol or bucket: the worst.
SEVERITY_ORDER = {Outcome.FAIL: 3, Outcome.NODATA: 2, Outcome.INCONCLUSIVE: 1, Outcome.PASS: 0}


@dataclass(frozen=True)
class Verdict:
    """One policy's judgement at ``at`` (Clock seconds), with what it was measured on.

    ``action`` is what the policy asks for now: its ``on_breach`` on a confirmed failure, its
    ``on_nodata`` action on missing data, None otherwise. ``breaching_since`` is set while the
    condition is false but its ``for`` duration has not yet run out (the pass is *pending*), and
    ``fails_at`` then says when that breach becomes a failure if the condition stays false.
    """

    policy: str
    outcome: Outcome
    at: float
    value: float | None
    threshold: float | None
    condition: str
    window: float
    samples: int
    group: Labels = ()
    reason: str = ""
    action: str | None = None
    breaching_since: float | None = None
    fails_at: float | None = None
    evidence: dict = field(default_factory=dict, compare=False)

    @property
    def key(self) -> tuple:
        """What makes a verdict a change of outcome (not every new value is). A pass turning pending
        and back is not one: a policy near its threshold does that every few scrapes. The verdict log
        stores that turn apart, damped (`store.verdicts.VerdictLog`)."""
        return (self.outcome, self.group, self.action)

    @property
    def pending(self) -> bool:
        """A pass whose condition is false, its ``for`` not yet run out: a breach in the making."""
        return self.outcome is Outcome.PASS and self.breaching_since is not None

    @property
    def group_key(self) -> str:
        """The group in one line, ``symbol=BTCUSDT`` (empty for a policy judged as a whole): how a
        group is stored and labelled, each group's outcome being tracked on its own."""
        return group_text(self.group)

    def to_json(self) -> dict:
        return {"policy": self.policy, "outcome": self.outcome.value, "at": self.at, "value": self.value,
                "threshold": self.threshold, "condition": self.condition, "window": self.window,
                "samples": self.samples, "group": dict(self.group), "reason": self.reason,
                "action": self.action, "breaching_since": self.breaching_since, "fails_at": self.fails_at,
                "evidence": self.evidence}


def group_text(group: Labels) -> str:
    """``((k, v), ...)`` as ``k=v,k2=v2`` (labels are sorted already): a column's and a label's value."""
    return ",".join(f"{name}={value}" for name, value in group)
