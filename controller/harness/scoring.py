"""How a harness run is scored: which fault each breach is put down to, which fault was caught
by which policy in time, what counts as the release under test failing, and the run's outcome.

Pure: no I/O and no clock. Times are seconds into the run (a verdict's ``at`` is a Clock time,
turned into one with the run's ``start``). The run feeds `Scoring` its events as they happen,
since a catch is what ends a faulty release's placement (the rollback); `score` replays a whole
run from its schedule, its placements' spans and its verdicts.

The rules:

- Which policies the harness judges (`not_judged`): it feeds the exchange and the bot's
  metrics, runs no baseline release and holds no capital cap.
- A fault is expected to be caught by the judged policies `Fault.expected` names. It must be
  caught if any is expected, and a defect must be caught unless its schedule says
  ``expect=none``; a defect no judged policy watches therefore cannot pass.
- What catches a fault: a verdict of a policy expected to catch it that fails, or that has no
  data and acts on it (hold or rollback) once the release has been placed for the policy's
  ``stale_after`` (before that its sources have not reported yet). A defect can be caught only
  by the verdicts of the placement that carries it, and only while it is placed: its deadline
  is the next placement or the run's end. A sim fault that must be caught can be caught until
  the run's end. A catch ends that placement's judging (the rollback places the healthy release).
- A breach (a failure, or missing data whose action is rollback) that catches nothing is the
  release under test failing, once per episode (a policy's group failing until it passes
  again, within one placement); it counts against every sim fault whose knob (or aftermath,
  `Fault.span`) is on then, which must then have been ridden out.
- The release's bot crashing is an error unless a defect that crashes it is what it carries.
- The run is ok when it ran its whole duration, no breach went unexplained, no error happened,
  and every fault was injected and ended as expected (`fault_ok`); its exit status is 0 when
  ok, 1 otherwise.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from controller.analysis.policy import Policy
from controller.analysis.verdict import Outcome, Verdict
from controller.harness.faults import Fault
from controller.harness.result import Breach, FaultResult, HarnessResult

JUDGED_SOURCES = frozenset({"bot", "exchange"})
CRASH = "unhandled_exception_after_seconds"  # the one defect whose bot is meant to crash


def not_judged(policy: Policy) -> str | None:
    """Why the harness cannot judge ``policy``, or None: it feeds the exchange and the bot's
    metrics, runs no baseline release and holds no capital cap."""
    if policy.source not in JUDGED_SOURCES:
        return f"the harness has no {policy.source} source"
    names = policy.parsed_condition.names
    if "baseline" in names or policy.aggregate == "mann_whitney":
        return "needs a baseline release running beside it"
    if "capital_cap" in names:
        return "needs a stage capital cap on a sub-account"
    return None


def must_be_caught(fault: Fault, expected: Sequence[str]) -> bool:
    """Whether the run fails unless a policy catches ``fault``."""
    return bool(expected) or (fault.kind == "defect" and fault.expect != "none")


def fault_ok(result: FaultResult) -> bool:
    """A fault ended as expected: injected, and caught by an expected policy if it had to be,
    else ridden out with no breach while it was on."""
    if result.injected_at is None:
        return False
    if result.must_be_caught:
        return result.caught_by is not None and result.caught_by in result.expected
    return not result.breaches and result.caught_by is None


def run_ok(result: HarnessResult) -> bool:
    finished = result.simulated_s >= result.duration_s
    return (finished and not result.unexpected_breaches and not result.errors
            and all(fault_ok(f) for f in result.faults))


def exit_status(result: HarnessResult) -> int:
    """`canaryctl harness run`'s exit status for a run that ran: 0 as expected, 1 not."""
    return 0 if result.ok else 1


@dataclass(eq=False)
class _Placement:
    label: str
    started: float
    defect: FaultResult | None
    closed: bool = False          # its judging is over: it caught its fault, or it ended
    latest: dict[str, Verdict] = field(default_factory=dict)  # policy -> its last verdict
    failing: set[tuple] = field(default_factory=set)          # (policy, group) in a breach now


class Scoring:
    """The rules above, applied to a run's events in the order they happen."""

    def __init__(self, faults: Sequence[Fault], *, stage: str, release: str, duration: float,
                 policies: Sequence[Policy], other_policies: Sequence[Policy] = (), start: float = 0.0) -> None:
        self.start = start
        self.stage = stage
        self.policies = tuple(policies)
        self.other_policies = tuple(other_policies)
        self.judged = [p for p in policies if not_judged(p) is None]
        self.by_name = {p.name: p for p in policies}
        self._judged_names = frozenset(p.name for p in self.judged)
        self.result = HarnessResult(stage=stage, release=release, duration_s=duration,
                                    not_judged={p.name: why for p in policies if (why := not_judged(p)) is not None})
        for fault in faults:
            expected = fault.expected(self.judged)
            self.result.faults.append(FaultResult(fault, expected, must_be_caught=must_be_caught(fault, expected)))
        self._placements: list[_Placement] = []
        self._open: list[FaultResult] = []  # injected, and may still be caught
        self._on: list[FaultResult] = []    # sim faults whose knob (or aftermath) is on

    # ------------------------------------------------------------ events

    def injected(self, fault: int, at: float) -> FaultResult:
        """The schedule's ``fault``-th fault was injected ``at`` (a defect: before its placement)."""
        result = self.result.faults[fault]
        result.injected_at = at
        if result.must_be_caught:
            result.note = self._uncatchable(result)
        self._open.append(result)
        if result.fault.kind == "sim":
            self._on.append(result)
        return result

    def knob_off(self, fault: int) -> None:
        """A sim fault's span ended: breaches are no longer put down to it, and one the release
        was to ride out is settled."""
        result = self.result.faults[fault]
        if result in self._on:
            self._on.remove(result)
        if not result.must_be_caught and result in self._open:
            self._open.remove(result)

    def placed(self, label: str, at: float, defect: int | None = None) -> int:
        """A release was placed ``at`` (carrying the ``defect``-th fault); returns its index."""
        self._placements.append(_Placement(label, at, None if defect is None else self.result.faults[defect]))
        self.result.releases_placed = len(self._placements)
        return len(self._placements) - 1

    def ended(self, placement: int, at: float, why: str, crash: str | None = None) -> None:
        """The placement stopped ``at`` because ``why`` (e.g. "X was placed"); ``crash``: what
        ended its bot before, if it crashed."""
        ending = self._placements[placement]
        ending.closed = True
        defect = ending.defect
        if crash is not None and (defect is None or defect.fault.name != CRASH):
            self.result.errors.append(f"the bot of {ending.label} crashed: {crash}")
        if defect is not None and defect in self._open:
            self._open.remove(defect)
            if defect.caught_by is None:
                missed = f"not caught before {why} ({at / 3600:.2f} h)"
                defect.note = f"{defect.note}; {missed}" if defect.note else missed

    def judge(self, placement: int, verdict: Verdict) -> FaultResult | None:
        """One verdict of the placement's verification; returns the fault it catches, if any:
        the run then rolls the faulty release back (and turns the fault's knob off)."""
        if verdict.policy not in self._judged_names:
            return None  # no verification evaluates it: nothing it says can count
        judged = self._placements[placement]
        judged.latest[verdict.policy] = verdict
        if judged.closed:
            return None
        key = (verdict.policy, verdict.group)
        breach = verdict.outcome is Outcome.FAIL or (verdict.action == "rollback" and verdict.outcome is Outcome.NODATA)
        new_episode = breach and key not in judged.failing
        if breach:
            judged.failing.add(key)
        else:
            judged.failing.discard(key)
        at = verdict.at - self.start
        caught = self._caught(judged, verdict)
        if caught is not None:
            caught.caught_by, caught.caught_outcome = verdict.policy, verdict.outcome.value
            caught.detect_s = max(0.0, at - (caught.injected_at or 0.0))
            self._open.remove(caught)
            if caught in self._on:  # the rollback turns its knob off
                self._on.remove(caught)
            if breach:
                self.result.breaches.append(Breach(at, verdict, caught.fault))
            judged.closed = True
        elif new_episode:
            self.result.breaches.append(Breach(at, verdict, None))
            for on in self._on:
                on.breaches.append(verdict.policy)
        return caught

    def finish(self, simulated: float) -> HarnessResult:
        """The run ended after ``simulated`` seconds: the final verdicts (the last placement's),
        what was never caught, and the outcome."""
        result = self.result
        result.simulated_s = simulated
        latest = self._placements[-1].latest if self._placements else {}
        result.verdicts = {p.name: latest[p.name].outcome.value if p.name in latest else "none" for p in self.judged}
        for fault in self._open:
            if fault.must_be_caught and fault.caught_by is None and not fault.note:
                fault.note = "not caught by the end of the run"
        for fault in result.faults:
            fault.ok = fault_ok(fault)
        result.ok = run_ok(result)
        return result

    # ------------------------------------------------------------ the rules

    def _caught(self, placement: _Placement, verdict: Verdict) -> FaultResult | None:
        """The earliest open fault this verdict catches."""
        if verdict.outcome is Outcome.NODATA and verdict.action in ("hold", "rollback"):
            policy = self.by_name[verdict.policy]
            if verdict.at - self.start - placement.started < policy.on_nodata.stale_after:
                return None  # a release just placed: its sources have not reported yet
        elif verdict.outcome is not Outcome.FAIL:
            return None
        for result in self._open:
            if verdict.policy not in result.expected:
                continue
            if result.fault.kind == "defect" and result is not placement.defect:
                continue
            return result
        return None

    def _uncatchable(self, result: FaultResult) -> str:
        """Why a fault that must be caught cannot be, here ("" if it can)."""
        fault = result.fault
        if result.expected:
            if any(name in self._judged_names for name in result.expected):
                return ""
            return "; ".join(f"{name} cannot catch it here: "
                             f"{self.result.not_judged.get(name, f'stage {self.stage} has no such policy')}"
                             for name in result.expected)
        note = f"no policy of stage {self.stage} watches what {fault.name} moves"
        unjudged = [p.name for p in self.policies if p.name in fault.expected(self.policies)
                    and p.name in self.result.not_judged]
        if unjudged:
            note = (f"no policy of stage {self.stage} that the harness judges watches what {fault.name} moves "
                    f"({', '.join(f'{name}: {self.result.not_judged[name]}' for name in unjudged)})")
        watching = fault.expected(self.other_policies)
        return note + (f" ({', '.join(watching)} do, in other stages)" if watching else "")


# ---------------------------------------------------------------- a whole run at once

@dataclass(frozen=True)
class PlacementSpan:
    """One placement of a run, in seconds into the run: from ``started`` to ``ended``, carrying
    the schedule's ``defect``-th fault (None: the healthy release)."""

    label: str
    started: float
    ended: float
    defect: int | None = None
    why_ended: str = "the run ended"
    crash: str | None = None


def score(faults: Sequence[Fault], *, stage: str, release: str, duration: float, policies: Sequence[Policy],
          placements: Sequence[PlacementSpan], verdicts: Iterable[tuple[int, Verdict]],
          injected: Mapping[int, float], simulated: float, other_policies: Sequence[Policy] = (),
          start: float = 0.0) -> HarnessResult:
    """A whole run scored at once. ``verdicts``: (placement index, verdict) as the placements'
    verifications gave them; ``injected``: each injected fault's time, by its index in ``faults``.
    A sim fault's span ends at its schedule's time plus `Fault.span`, if that is before the run's end.

    Events at the same time come in the order the run meets them: a knob going off, a fault
    injected, a verdict, a placement ending, the next one starting.
    """
    scoring = Scoring(faults, stage=stage, release=release, duration=duration, policies=policies,
                      other_policies=other_policies, start=start)
    events: list[tuple[float, int, int, tuple]] = []

    def add(at: float, rank: int, event: tuple) -> None:
        events.append((at, rank, len(events), event))

    for index, at in injected.items():
        add(at, 1, ("injected", index, at))
        span = faults[index].span
        if span is not None and faults[index].at + span < simulated:
            add(faults[index].at + span, 0, ("knob_off", index))
    for index, verdict in verdicts:
        add(verdict.at - start, 2, ("judge", index, verdict))
    for index, span in enumerate(placements):
        add(span.ended, 3, ("ended", index, span.ended, span.why_ended, span.crash))
        add(span.started, 4, ("placed", index, span.label, span.started, span.defect))
    for _, _, _, (kind, *args) in sorted(events):
        if kind == "placed":
            index, *placed = args
            assert scoring.placed(*placed) == index, "placements in the order they started"
        else:
            getattr(scoring, kind)(*args)
    return scoring.finish(simulated)
