"""Policy evaluation: observations in, verdicts out. Pure: no I/O, time passed in.

Each policy keeps its own windows, one per series (metric + labels), grouped by the policy's
``per`` labels. `observe` routes an observation to the policies that read it and, for
instant policies (no ``for``), re-judges the affected group at once: an exchange event
becomes a breach verdict without waiting for a tick. `evaluate` judges every policy; the
daemon calls it on a steady tick.

How missing data is told apart from a pass: a source is fresh while its last successful
`Heartbeat` is younger than the policy's ``on_nodata.stale_after``. A stale source gives
``nodata`` whatever its old values say. A fresh source with no sample gives 0 for counting
aggregates (sum, count, increase: nothing happened) and ``nodata`` for the others; fewer
samples than ``min_samples`` give ``inconclusive``.

Fail closed, in bounded memory:

- a NaN or an infinity never enters a window (one NaN in a max queue hides a breach): it is
  counted (`take_rejections`, for the shell to export) and its group is ``nodata`` until that
  series sends a finite sample again;
- an error while judging a policy (a threshold bound to a bad value, an overflow) is that
  policy's ``inconclusive`` verdict with the reason; the other policies are judged as ever;
- a series whose window has been empty for longer than its span (an instant policy: than its
  ``stale_after``) is evicted on the tick, and a group with no series left with it, so a label
  value that vanished stops holding its policy at ``nodata``;
- a policy keeps at most `MAX_SERIES_PER_POLICY` series; past that, new ones are refused and
  the policy cannot pass (``inconclusive``, saying so) until the refused samples would have
  left its window. Per-label-set lookups are cached, the caches bounded too.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace

from controller.analysis.condition import COMPARATORS, Condition, ConditionError
from controller.analysis.observation import Batch, Heartbeat, Labels, Observation
from controller.analysis.policy import Policy
from controller.analysis.verdict import SEVERITY_ORDER, Outcome, Verdict
from controller.analysis.spread import MIN_PERIODS, PairedSpread
from controller.analysis.window import Window

QUANTILES = {"p50": 0.50, "p90": 0.90, "p95": 0.95, "p99": 0.99}
COUNTING = {"sum", "count", "increase"}
# Aggregates whose value depends on the time itself: measured afresh each time; the others only
# when a window moved (those against the baseline: one of the group's or the baseline's windows).
_MEASURED_EACH_TIME = {"age"}
_AGAINST_BASELINE = {"mann_whitney", "growth_vs_baseline"}
_SERIALS = itertools.count()  # tells groups apart across evictions, whatever their versions
GROWTH_STANDARD_ERRORS = 3.0
"""How many standard errors ``growth_vs_baseline`` gives the canary the benefit of: a
healthy release on a random walk is held in at most 1 % of 24 h stages (tests/analysis)."""

MAX_SERIES_PER_POLICY = 1000
"""Series (label sets, and series whose newest sample was rejected) one policy keeps at most.
A bot that exports a new label value per order would otherwise grow the evaluator without end;
20 symbols times a histogram's buckets is well below it."""
_LABEL_CACHE_LIMIT = 4 * MAX_SERIES_PER_POLICY  # label sets remembered per policy before the caches start over

# Values a threshold may use for one group: allocation/leverage of its bucket/symbol, the
# stage's capital cap, the baseline release's value. Supplied by whoever runs the evaluator.
Bindings = Callable[[Policy, Labels, float], Mapping[str, float]]


def no_bindings(_policy: Policy, _group: Labels, _now: float) -> Mapping[str, float]:
    return {}


@dataclass
class _Group:
    key: Labels = ()
    series: dict[Labels, Window] = field(default_factory=dict)
    # Series whose newest sample was NaN or an infinity: how it was written, and when.
    rejected: dict[Labels, tuple[str, float]] = field(default_factory=dict)
    breaching_since: float | None = None
    # Changes whenever a window moved (a sample in, one expired) or a series came or went: a group
    # whose version is the one it was measured on needs no measuring again.
    version: int = 0
    expires_at: float = math.inf  # no window of the group forgets anything until after then
    # An aggregate of each series alone (last, min, max, sum, count, mean: `_PER_SERIES`) keeps each
    # series' figure and sample count as last measured, in the order of ``series`` (an empty series'
    # figure is the aggregate's `_NEUTRAL`, put in as the series is), their samples in all, and the
    # series that moved since: a group of many series is measured again on the one a sample went
    # into, not on all of them.
    per_series: dict[Labels, float] | None = None
    per_series_held: dict[Labels, int] = field(default_factory=dict)
    held: int = 0
    moved_series: set[Labels] = field(default_factory=set)
    serial: int = field(default_factory=lambda: next(_SERIALS))
    measured: tuple[object, tuple[float | None, int]] | None = None  # (what it was measured on, measure)
    judged: Verdict | None = None  # its last verdict while that was a plain pass (no breach pending)

    def expire(self, now: float) -> int:
        """The windows expired to ``now`` (only when one of them is due); the group's version then."""
        if now > self.expires_at:
            soonest = math.inf
            for key, window in self.series.items():
                before = window.version
                window.expire(now)
                if window.version != before:
                    self.version += 1
                    if self.per_series is not None:
                        self.moved_series.add(key)
                soonest = min(soonest, window.expires_at())
            self.expires_at = soonest
        return self.version

    def moved(self, key: Labels, window: Window) -> None:
        """A sample went into ``window``, the series ``key``'s."""
        self.version += 1
        self.expires_at = min(self.expires_at, window.expires_at())
        if self.per_series is not None:
            self.moved_series.add(key)

    def forget(self, key: Labels) -> None:
        """The series ``key`` is evicted."""
        del self.series[key]
        self.version += 1
        if self.per_series is not None:
            del self.per_series[key]
            self.held -= self.per_series_held.pop(key)
            self.moved_series.discard(key)


class _PolicyState:
    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.condition: Condition = policy.parsed_condition
        self.groups: dict[Labels, _Group] = {}
        distribution = policy.aggregate in QUANTILES or policy.aggregate == "mann_whitney"
        self.histogram = policy.source == "bot" and distribution
        self.metric = f"{policy.metric}_bucket" if self.histogram else policy.metric
        # Distributions of event samples (a fill's notional ratio, ...) pool a group's series into
        # one window: the distribution is the group's, whichever series a sample came from.
        self.pooled = distribution and not self.histogram
        self.keeps_quantiles = self.pooled  # only a pooled distribution asks its window for quantiles and counts
        # Only a counter's increase (a histogram's buckets, ratio, rate) asks for the steps between samples.
        self.keeps_steps = self.histogram or policy.aggregate in {"increase", "rate", "ratio", "growth_vs_baseline"}
        self.per_series = policy.aggregate in _PER_SERIES and not self.histogram  # see `_Group.per_series`
        self.instant = policy.instant
        self.filters = bool(policy.labels)  # asked for every sample: kept as plain attributes
        self.grouped = bool(policy.per)
        # Per label set, computed once: whether the policy reads it, and which group it is in.
        self._accepted: dict[Labels, bool] = {}
        self._groups_of: dict[Labels, Labels] = {}
        try:
            self.constant_threshold = self.condition.threshold() if not self.condition.names else None
        except ConditionError:  # judged inconclusive, with the reason, whenever it is judged
            self.constant_threshold = None
        # Whether a group's verdict follows from its windows alone (then it is judged again only when they move).
        # A threshold with names is bound again before a pass is let stand (the values may move).
        self.judged_once = policy.aggregate not in _MEASURED_EACH_TIME and (
            self.constant_threshold is not None or bool(self.condition.names))
        self.series_count = 0  # windows and rejected series over all groups, against the cap
        self.refused_at: float | None = None  # the newest sample refused for the cap
        # growth_vs_baseline: per group, the completed periods paired with the baseline's and their spread
        self.spreads: dict[Labels, PairedSpread] = {}
        # How long a series' newest sample may be older than ``now`` before the series goes: its
        # window, then as long again (an instant policy: its stale_after) showing its absence.
        grace = policy.on_nodata.stale_after if policy.instant else policy.window
        self.evict_after = policy.window + grace
        self.evictable_after = math.inf  # no series is evicted before then (a lower bound: newer samples push it on)

    def accepts(self, obs: Observation) -> bool:
        if not self.filters:
            return True
        known = self._accepted.get(obs.labels)
        if known is None:
            if len(self._accepted) >= _LABEL_CACHE_LIMIT:
                self._accepted.clear()
            known = self._accepted[obs.labels] = _matches(self.policy.labels, obs.labels)
        return known

    def group_of(self, obs: Observation) -> Labels:
        if not self.grouped:
            return ()
        group = self._groups_of.get(obs.labels)
        if group is None:
            if len(self._groups_of) >= _LABEL_CACHE_LIMIT:
                self._groups_of.clear()
            group = self._groups_of[obs.labels] = tuple((name, obs.label(name) or "") for name in self.policy.per)
        return group

    def _room_for(self, group: _Group | None, known: bool, ts: float) -> bool:
        """Whether a sample may go in: into a series the group has, or a new one under the cap."""
        if group is not None and known:
            return True
        if self.series_count < MAX_SERIES_PER_POLICY:
            self.series_count += 1
            return True
        self.refused_at = ts if self.refused_at is None else max(self.refused_at, ts)
        return False

    def _group(self, key: Labels) -> _Group:
        return _Group(key, per_series={} if self.per_series else None)

    def _window(self) -> Window:
        if self.policy.aggregate == "growth_vs_baseline":
            # Folded from the start, in periods of a minute at most: the spread is measured on the
            # changes between periods, not between snapshots a second apart, whose noise around the
            # level (unrealised PnL as the price moves between bid and ask) is not the market's.
            return Window(self.policy.window, panes=max(60, math.ceil(self.policy.window / 60)), exact_limit=0,
                          quantiles=False, maximum=False, minimum=False)
        return Window(self.policy.window, quantiles=self.keeps_quantiles, steps=self.keeps_steps,
                      maximum=self.policy.aggregate == "max", minimum=self.policy.aggregate == "min")

    def add(self, obs: Observation) -> Labels | None:
        """Put a finite sample in its window; None when the series cap refused it."""
        group_key = self.group_of(obs)
        group = self.groups.get(group_key)
        series_key = () if self.pooled else obs.labels
        if not self._room_for(group, group is not None and series_key in group.series, obs.ts):
            return None
        if group is None:
            group = self.groups[group_key] = self._group(group_key)
        window = group.series.get(series_key)
        if window is None:
            window = group.series[series_key] = self._window()
            if group.per_series is not None:
                group.per_series[series_key] = _NEUTRAL[self.policy.aggregate]
                group.per_series_held[series_key] = 0
            self.evictable_after = min(self.evictable_after, obs.ts + self.evict_after)
        window.add(obs.ts, obs.value)
        group.moved(series_key, window)
        if group.rejected.pop(obs.labels, None) is not None:
            self.series_count -= 1
        return group_key

    def reject(self, obs: Observation, written: str) -> Labels | None:
        """Mark the sample's series as having no finite value now; None when the cap refused it."""
        group_key = self.group_of(obs)
        group = self.groups.get(group_key)
        if not self._room_for(group, group is not None and obs.labels in group.rejected, obs.ts):
            return None
        if group is None:
            group = self.groups[group_key] = self._group(group_key)
        group.rejected[obs.labels] = (written, obs.ts)
        self.evictable_after = min(self.evictable_after, obs.ts + self.evict_after)
        return group_key

    def evict(self, now: float) -> None:
        """Forget series whose window has long been empty, then groups left with none."""
        if self.refused_at is not None and now - self.refused_at > self.policy.window:
            self.refused_at = None
        if now <= self.evictable_after:
            return
        edge = now - self.evict_after
        before = self.series_count
        newest_gone = math.inf  # of what stays: the oldest newest sample
        for group_key, group in list(self.groups.items()):
            for series_key in [k for k, w in group.series.items() if w.latest < edge]:
                group.forget(series_key)
                self.series_count -= 1
            for series_key in [k for k, (_, ts) in group.rejected.items() if ts < edge]:
                del group.rejected[series_key]
                self.series_count -= 1
            if not group.series and not group.rejected:
                del self.groups[group_key]
                continue
            newest_gone = min(newest_gone, *(w.latest for w in group.series.values()),
                              *(ts for _, ts in group.rejected.values()))
        self.evictable_after = newest_gone + self.evict_after
        if self.series_count < before:  # the label sets of what went are likely gone for good too
            self._accepted.clear()
            self._groups_of.clear()

    def over_cap(self, now: float) -> str | None:
        """Why the policy cannot pass now: samples refused for the cap are (or would be) in its window."""
        if self.refused_at is None or now - self.refused_at > self.policy.window:
            return None
        return (f"more than {MAX_SERIES_PER_POLICY} series (label sets) for this policy: new ones are refused, "
                f"so it cannot be judged on all of its data (a label with a value per order or per request?)")


class Evaluator:
    """Judges a set of policies over one release's observations."""

    def __init__(self, policies: Iterable[Policy], *, bindings: Bindings = no_bindings,
                 baseline: Evaluator | None = None) -> None:
        self.bindings = bindings
        self.baseline = baseline  # the previous release on the same market, for mann_whitney
        self._states = [_PolicyState(p) for p in policies]
        self._by_metric: dict[tuple[str, str], list[_PolicyState]] = defaultdict(list)
        self._by_name = {state.policy.name: state for state in self._states}
        self._by_source: dict[str, list[_PolicyState]] = defaultdict(list)
        for state in self._states:
            self._by_metric[(state.policy.source, state.metric)].append(state)
            self._by_source[state.policy.source].append(state)
        self._fresh: dict[str, float] = {}
        self._errors: dict[str, str] = {}
        self._rejected: dict[str, int] = {}  # non-finite samples by reason ("nan", "inf"), not yet taken

    @property
    def policies(self) -> list[Policy]:
        return [s.policy for s in self._states]

    # --- input ------------------------------------------------------------------------------------

    def heartbeat(self, beat: Heartbeat, now: float | None = None) -> list[Verdict]:
        """Record a source's health; a successful read re-judges the source's instant policies that
        had no fresh data, whose verdicts waited for it (sources report data, then their heartbeat).

        A failed read leaves the source fresh until ``stale_after`` (a lost scrape is not a lost
        stage); a source that stopped and restarts has no data at all until it reads again, and
        every policy it feeds is judged at once, so none keeps passing on what it said before."""
        if not beat.ok:
            self._errors[beat.source] = beat.error or "unknown error"
            if not beat.restarting:
                return []
            self._fresh.pop(beat.source, None)
            at = beat.ts if now is None else now
            return [self._judge(state, at) for state in self._by_source.get(beat.source, ())]
        at = beat.ts if now is None else now
        # Only the policies that had no fresh data: the others judged each sample as it came.
        waiting = [state for state in self._by_source.get(beat.source, ())
                   if state.instant and self._staleness(state.policy, at) is not None]
        self._fresh[beat.source] = max(self._fresh.get(beat.source, -math.inf), beat.ts)
        self._errors.pop(beat.source, None)
        return [self._judge(state, at) for state in waiting]

    def observe(self, obs: Observation, now: float | None = None) -> list[Verdict]:
        """Record ``obs``; returns fresh verdicts of the instant policies it touched."""
        if (obs.source, obs.metric) not in self._by_metric:  # no policy reads it (a witness's figure, ...)
            return []
        return self.observe_many((obs,), now)

    def observe_many(self, observations: Iterable[Observation], now: float | None = None) -> list[Verdict]:
        """Record observations read together (a scrape); then each instant policy's groups they
        touched are judged once, not once per sample. Returns the fresh verdicts."""
        touched: dict[tuple[int, Labels | None], tuple[_PolicyState, float]] = {}
        for obs in observations:
            self._record(obs, now, touched)
        verdicts = []
        for (_, group_key), (state, at) in touched.items():
            if group_key is None:  # the first refusal: the policy can no longer pass (said once, not per sample)
                verdicts.append(self._judge(state, at))
            elif not self._still_passing(state, group_key, at):  # else: the tick says so, no verdict per sample
                verdicts.append(self._judged(state, group_key, at))
        return verdicts

    def _record(self, obs: Observation, now: float | None,
                touched: dict[tuple[int, Labels | None], tuple[_PolicyState, float]]) -> None:
        """Put ``obs`` in the windows of the policies that read it; note the instant ones' groups
        it touched (None: the policy's first sample refused for its series cap) in ``touched``."""
        finite = math.isfinite(obs.value) and math.isfinite(obs.ts)
        read = False
        for state in self._by_metric.get((obs.source, obs.metric), ()):
            if not state.accepts(obs):
                continue
            read = True
            refusing = state.refused_at is not None
            if not finite:
                if not math.isfinite(obs.ts):
                    continue  # a sample that is nowhere in time cannot even mark its series
                group_key = state.reject(obs, _written(obs.value))
            else:
                group_key = state.add(obs)
            if not state.instant or (group_key is None and refusing):
                continue
            touched[(id(state), group_key)] = (state, obs.ts if now is None else now)
        if read and not finite:
            reason = "nan" if math.isnan(obs.value) or math.isnan(obs.ts) else "inf"
            self._rejected[reason] = self._rejected.get(reason, 0) + 1

    def take_rejections(self) -> dict[str, int]:
        """Non-finite samples refused since the last call, by reason (``nan``, ``inf``): what the
        shell adds to ``canary_observations_rejected_total``. Counted once per sample a policy reads."""
        taken, self._rejected = self._rejected, {}
        return taken

    def series_count(self, policy_name: str | None = None) -> int:
        """Series the evaluator holds (for one policy, or all): bounded by the cap and eviction."""
        return sum(s.series_count for s in self._states if policy_name in (None, s.policy.name))

    def feed(self, item: Observation | Heartbeat | Batch, now: float | None = None) -> list[Verdict]:
        if isinstance(item, Observation):
            return self.observe(item, now)
        if isinstance(item, Heartbeat):
            return self.heartbeat(item, now)
        return self.observe_many(item.observations, now)

    # --- judgement --------------------------------------------------------------------------------

    def evaluate(self, now: float) -> list[Verdict]:
        """Every policy's verdict at ``now``: the worst of its groups (long-empty series evicted first)."""
        for state in self._states:
            state.evict(now)
        return [self._judge(state, now) for state in self._states]

    def _state(self, policy_name: str) -> _PolicyState:
        state = self._by_name.get(policy_name)
        if state is None:
            raise LookupError(f"no policy {policy_name!r} is judged on this release")
        return state

    def value(self, policy_name: str, group: Labels, now: float) -> float | None:
        """A policy's measured value for one group (what a canary's policy binds as ``baseline``)."""
        state = self._state(policy_name)
        group_state = state.groups.get(group)
        if group_state is None:
            return None
        value, _ = self._measure(state, group_state, now)
        return value

    def distribution(self, policy_name: str, group: Labels, now: float) -> dict[float, float]:
        """A distribution policy's samples in its window for one group (the baseline's side of a
        rank test), as counts of values: every one of them, a bot histogram's at its bucket's midpoint."""
        windows = self.windows(policy_name, group, now)
        if self._state(policy_name).histogram:
            return _histogram_counts(windows)
        return _pooled_counts(windows)

    def windows(self, policy_name: str, group: Labels, now: float) -> dict[Labels, Window]:
        """A policy's windows for one group, by series, expired to ``now`` (empty when it has none)."""
        group_state = self._state(policy_name).groups.get(group)
        if group_state is None:
            return {}
        group_state.expire(now)
        return group_state.series

    def version(self, policy_name: str, group: Labels, now: float) -> tuple[int, int] | None:
        """What changes whenever a policy's windows for one group move (expired to ``now``); None
        when it has none. What a canary's comparison with this release is measured on."""
        group_state = self._state(policy_name).groups.get(group)
        if group_state is None:
            return None
        return group_state.serial, group_state.expire(now)

    def _judge(self, state: _PolicyState, now: float) -> Verdict:
        """The policy's verdict: its worst group's; of passes, a pending one (a breach in the making
        is what a person must see; the outcome, all the gate reads, is a pass either way)."""
        worst_key, worst = (), None
        for key in list(state.groups) or [()]:
            verdict = self._judged(state, key, now, dated=False)
            if worst is None or SEVERITY_ORDER[verdict.outcome] > SEVERITY_ORDER[worst.outcome] or (
                    verdict.breaching_since is not None and worst.breaching_since is None
                    and verdict.outcome is worst.outcome is Outcome.PASS):
                worst_key, worst = key, verdict
        assert worst is not None
        group = state.groups.get(worst_key)
        if worst.at == now and (group is None or worst is not group.judged):
            return worst  # judged just now
        # A pass that stands, even one judged at this very time: a sample since, at the same time,
        # left its value as it was but not its sample count.
        return self._dated(state, worst_key, worst, now)

    def _dated(self, state: _PolicyState, group_key: Labels, verdict: Verdict, now: float) -> Verdict:
        """A pass that stands, dated ``now`` with the samples it rests on now."""
        group = state.groups.get(group_key)
        samples = self._measure(state, group, now)[1] if group is not None else verdict.samples
        return verdict if verdict.at == now and verdict.samples == samples else replace(verdict, at=now, samples=samples)

    def _judged(self, state: _PolicyState, group_key: Labels, now: float, *, dated: bool = True) -> Verdict:
        """One group's verdict; an error while judging, or a policy over its series cap, is never a pass.

        A group whose last verdict was a plain pass is judged again only when it could differ: its
        aggregate moved (or its samples crossed ``min_samples``), its source went stale, a sample
        was refused, or its threshold or aggregate depend on more than its windows. Otherwise the
        pass stands (dated ``now``, with its samples now, unless not ``dated``)."""
        policy = state.policy
        if self._still_passing(state, group_key, now):
            verdict = state.groups[group_key].judged
            assert verdict is not None
            return self._capped(state, self._dated(state, group_key, verdict, now) if dated else verdict, now)
        try:
            verdict = self._judge_group(state, group_key, now)
        except Exception as exc:  # the evaluator must keep judging the other policies, whatever this one hits
            return Verdict(policy=policy.name, outcome=Outcome.INCONCLUSIVE, at=now, value=None, threshold=None,
                           condition=policy.condition, window=policy.window, samples=0, group=group_key,
                           reason=f"cannot be judged: {type(exc).__name__}: {exc}")
        group = state.groups.get(group_key)
        if group is not None and state.judged_once:
            plain_pass = verdict.outcome is Outcome.PASS and verdict.breaching_since is None
            group.judged = verdict if plain_pass else None
        return self._capped(state, verdict, now)

    def _still_passing(self, state: _PolicyState, group_key: Labels, now: float) -> bool:
        """Whether a group whose last verdict was a plain pass still passes on the same value (its
        aggregate did not move, nor its sample count across ``min_samples``): nothing new to judge."""
        group = state.groups.get(group_key)
        if group is None or group.judged is None or not state.judged_once or group.breaching_since is not None \
                or group.rejected:
            return False
        if self._staleness(state.policy, now) is not None:
            return False
        last = group.judged
        value, samples = self._measure(state, group, now)
        enough = state.policy.min_samples
        if value != last.value or (samples >= enough) != (last.samples >= enough):
            return False
        if state.constant_threshold is not None:
            return True
        try:  # bound again: a pass stands only on the threshold it was judged against
            return state.condition.threshold(self.bindings(state.policy, group_key, now)) == last.threshold
        except Exception:  # noqa: BLE001 - judged afresh, where the error becomes the verdict
            return False

    @staticmethod
    def _capped(state: _PolicyState, verdict: Verdict, now: float) -> Verdict:
        """A pass of a policy over its series cap is inconclusive: it was not judged on all its data."""
        cap = state.over_cap(now) if verdict.outcome is Outcome.PASS else None
        return replace(verdict, outcome=Outcome.INCONCLUSIVE, reason=cap) if cap else verdict

    def _judge_group(self, state: _PolicyState, group_key: Labels, now: float) -> Verdict:
        policy = state.policy
        group = state.groups.get(group_key) or _Group(group_key)
        base = dict(policy=policy.name, at=now, condition=policy.condition, window=policy.window, group=group_key)
        stale = self._staleness(policy, now)
        if stale:
            group.breaching_since = None
            return Verdict(outcome=Outcome.NODATA, value=None, threshold=None, samples=0, reason=stale,
                           action=_nodata_action(policy), **base)
        if group.rejected:
            group.breaching_since = None
            labels, (written, ts) = next(iter(group.rejected.items()))
            series = "{" + ", ".join(f'{k}="{v}"' for k, v in labels) + "}"
            return Verdict(outcome=Outcome.NODATA, value=None, threshold=None, samples=0,
                           reason=f"the newest sample of {state.metric}{series} (at {ts:g}) is {written}, not a "
                                  f"number to judge: no data until a finite one arrives",
                           action=_nodata_action(policy), **base)
        value, samples = self._measure(state, group, now)
        if value is not None and not math.isfinite(value):
            group.breaching_since = None
            return Verdict(outcome=Outcome.INCONCLUSIVE, value=None, threshold=None, samples=samples,
                           reason=f"the {policy.aggregate} over the window is {value}, not a finite number", **base)
        if value is None:
            group.breaching_since = None
            return Verdict(outcome=Outcome.NODATA, value=None, threshold=None, samples=samples,
                           reason=_NO_VALUE.get(policy.aggregate, "no samples in the window"),
                           action=_nodata_action(policy), **base)
        if samples < policy.min_samples:
            group.breaching_since = None
            return Verdict(outcome=Outcome.INCONCLUSIVE, value=value, threshold=None, samples=samples,
                           reason=f"{samples} samples, {policy.min_samples} needed", **base)
        try:
            if state.constant_threshold is not None:
                threshold = state.constant_threshold
            else:
                threshold = state.condition.threshold(self.bindings(policy, group_key, now))
            holds = COMPARATORS[state.condition.comparator](value, threshold)
        except ConditionError as exc:
            return Verdict(outcome=Outcome.INCONCLUSIVE, value=value, threshold=None, samples=samples,
                           reason=f"threshold unavailable: {exc}", **base)
        if holds:
            group.breaching_since = None
            return Verdict(outcome=Outcome.PASS, value=value, threshold=threshold, samples=samples, **base)
        if group.breaching_since is None:
            group.breaching_since = now
        if now - group.breaching_since >= policy.for_:
            return Verdict(outcome=Outcome.FAIL, value=value, threshold=threshold, samples=samples,
                           reason=f"{value:g} is not {policy.condition}", action=policy.on_breach,
                           breaching_since=group.breaching_since, **base)
        return Verdict(outcome=Outcome.PASS, value=value, threshold=threshold, samples=samples,
                       reason=f"breaching for {now - group.breaching_since:g} s of {policy.for_:g} s",
                       breaching_since=group.breaching_since, fails_at=group.breaching_since + policy.for_, **base)

    def _staleness(self, policy: Policy, now: float) -> str | None:
        last = self._fresh.get(policy.source)
        if last is None:
            error = self._errors.get(policy.source)
            return (f"no data from the {policy.source} source since it stopped ({error})" if error
                    else f"no data from the {policy.source} source yet")
        age = now - last
        if age > policy.on_nodata.stale_after:
            error = self._errors.get(policy.source)
            return (f"the {policy.source} source last answered {age:g} s ago "
                    f"(stale after {policy.on_nodata.stale_after:g} s)" + (f": {error}" if error else ""))
        return None

    def _measure(self, state: _PolicyState, group: _Group, now: float) -> tuple[float | None, int]:
        """The group's aggregate over the window, and how many samples it rests on."""
        key: object = group.expire(now)
        if state.policy.aggregate in _MEASURED_EACH_TIME:
            return self._measure_window(state, group, now)
        if state.policy.aggregate in _AGAINST_BASELINE and self.baseline is not None:
            key = (key, self.baseline.version(state.policy.name, group.key, now))
        if group.measured is not None and group.measured[0] == key:
            return group.measured[1]
        measure = self._measure_window(state, group, now)
        group.measured = (key, measure)
        return measure

    def _measure_window(self, state: _PolicyState, group: _Group, now: float) -> tuple[float | None, int]:
        policy = state.policy
        if group.per_series is not None:
            return _measure_per_series(policy.aggregate, group)
        windows, samples = [], 0  # the windows with samples, and how many they hold (one pass: asked per sample)
        for window in group.series.values():
            held = window.count()
            if held:
                windows.append(window)
                samples += held
        aggregate = policy.aggregate
        if aggregate == "mann_whitney":
            return self._rank_test(state, group, now)
        if aggregate == "growth_vs_baseline":
            return self._growth_against_baseline(state, group, now)
        if state.histogram:
            return _histogram_quantile(QUANTILES[aggregate], group.series)
        if aggregate == "ratio":
            total = sum(w.increase() or 0.0 for w in windows)
            hits = sum(w.increase() or 0.0 for labels, w in group.series.items()
                       if w.count() and _matches(policy.numerator or {}, labels))
            return (hits / total if total else None), int(total)
        if not windows:
            return (0.0 if aggregate in COUNTING else None), 0
        if aggregate in QUANTILES:  # pooled: one window per group
            return windows[0].quantile(QUANTILES[aggregate]), samples
        if aggregate == "increase":
            return sum(w.increase() or 0.0 for w in windows), samples
        if aggregate == "age":
            return max(now - w.last()[1] for w in windows), samples
        if aggregate == "rate":  # a counter's increase per second over the window, as PromQL's rate()
            return sum(w.increase() or 0.0 for w in windows) / policy.window, samples
        values = [_PER_SERIES[aggregate](w) for w in windows]
        return float(_COMBINE[aggregate](values)), samples


    def _rank_test(self, state: _PolicyState, group: _Group, now: float) -> tuple[float | None, int]:
        """Mann-Whitney U of the canary's samples against the baseline's, same policy and group:
        the effect P(canary > baseline) if significant, else 0.5; samples: the smaller side."""
        from controller.analysis.comparison import ALPHA, compare_counts

        group_key = group.key
        if state.groups.get(group_key) is not group:  # nothing observed for this group yet
            return None, 0
        canary = _histogram_counts(group.series) if state.histogram else _pooled_counts(group.series)
        n_canary = int(sum(canary.values()))
        if self.baseline is None:
            return None, n_canary
        baseline = self.baseline.distribution(state.policy.name, group_key, now)
        samples = min(n_canary, int(sum(baseline.values())))
        result = compare_counts(canary, baseline, min_samples=1, min_effect=0.0, alpha=ALPHA)
        if result.p_value is None:
            return None, samples
        value = result.effect if result.p_value < ALPHA else 0.5
        return value, samples

    def _growth_against_baseline(self, state: _PolicyState, group: _Group,
                                 now: float) -> tuple[float | None, int]:
        """How much more the value grew over the window on the canary than on the baseline release
        (same policy and group), plus `GROWTH_STANDARD_ERRORS` standard errors of that difference.

        The two are paired period by period (a minute, or the window's pane): the difference's
        change from one period to the next, per square root of a second, has a spread measured
        robustly (1.4826 times the median absolute deviation, the standard deviation of normal
        changes; a burst of costs or one jump does not pass for the market's noise), and the
        standard error is that spread times the square root of the time the pairs span. Markets
        both releases trade move both alike and cancel. Samples: the smaller side's."""
        group_key = group.key if state.groups.get(group.key) is group else None
        ours = _only_window(group.series)
        if group_key is None or ours is None or self.baseline is None:
            return None, ours.count() if ours else 0
        theirs = _only_window(self.baseline.windows(state.policy.name, group_key, now))
        if theirs is None:
            return None, 0
        samples = min(ours.count(), theirs.count())
        # The completed pairs and their changes are kept as periods come and go, not paired afresh.
        paired = state.spreads.get(group_key)
        if paired is None or not paired.reads(ours, theirs):
            if len(state.spreads) >= _LABEL_CACHE_LIMIT:
                state.spreads.clear()
            paired = state.spreads[group_key] = PairedSpread(ours, theirs)
        paired.update()
        spread, first = paired.spread(), paired.first()
        if spread is None or first is None:
            return None, samples
        (first_t, first_difference), (our_t, our_last), (their_t, their_last) = first, ours.last(), theirs.last()
        error = spread * math.sqrt(max(0.0, max(our_t, their_t) - first_t))
        return our_last - their_last - first_difference + GROWTH_STANDARD_ERRORS * error, samples


def _measure_per_series(aggregate: str, group: _Group) -> tuple[float | None, int]:
    """An aggregate of each series alone, combined over the group: only the series that moved since
    the last measure are measured again (see `_Group.per_series`)."""
    per_series, held = group.per_series, group.per_series_held
    assert per_series is not None
    if group.moved_series:
        measure, neutral = _PER_SERIES[aggregate], _NEUTRAL[aggregate]
        for key in group.moved_series:
            window = group.series[key]
            count = window.count()
            group.held += count - held[key]
            held[key] = count
            per_series[key] = measure(window) if count else neutral
        group.moved_series.clear()
    if not group.held:
        return (0.0 if aggregate in COUNTING else None), 0
    if aggregate == "mean":  # a mean of the series' means: of those with samples only
        return float(_COMBINE[aggregate]([value for key, value in per_series.items() if held[key]])), group.held
    return float(_COMBINE[aggregate](per_series.values())), group.held


def _only_window(series: Mapping[Labels, Window]) -> Window | None:
    """A level's one window in its group (a PnL has no labels); more than one cannot be paired."""
    windows = [w for w in series.values() if w.count()]
    if len(windows) > 1:
        raise ValueError(f"{len(windows)} series in one group: a level to compare is one series (add per: labels)")
    return windows[0] if windows else None


def _pooled_counts(series: Mapping[Labels, Window]) -> dict[float, float]:
    """A pooled distribution's samples as counts of values."""
    counts: dict[float, float] = defaultdict(float)
    for window in series.values():
        if window.count():
            for value, count in window.counts().items():
                counts[value] += count
    return dict(counts)


def _histogram_counts(series: Mapping[Labels, Window]) -> dict[float, float]:
    """The window's observations of a histogram, as counts at their bucket's midpoint (the +Inf
    bucket's at its lower bound): ranks are exact between buckets, tied within one, and every
    observation counts, however few a bucket has."""
    increases = sorted((float(dict(labels)["le"]), window.increase() or 0.0)
                       for labels, window in series.items() if "le" in dict(labels) and window.count())
    counts: dict[float, float] = defaultdict(float)
    lower, below = 0.0, 0.0
    for upper, cumulative in increases:
        point = lower if math.isinf(upper) else (lower + upper) / 2
        if cumulative > below:
            counts[point] += cumulative - below
        lower, below = (upper if not math.isinf(upper) else lower), max(below, cumulative)
    return dict(counts)


_NO_VALUE = {
    "growth_vs_baseline": f"fewer than {MIN_PERIODS + 1} periods observed on both the canary and the baseline release",
}

_PER_SERIES: dict[str, Callable[[Window], float]] = {
    "last": lambda w: w.last()[1], "min": Window.min, "max": Window.max, "sum": Window.sum,
    "count": Window.count, "mean": Window.mean,
}
_NEUTRAL: dict[str, float] = {"last": -math.inf, "min": math.inf, "max": -math.inf, "sum": 0.0, "count": 0,
                              "mean": 0.0}
"""What an empty series adds to its group's combined figure: nothing (a mean leaves it out)."""
_COMBINE: dict[str, Callable[[Iterable[float]], float]] = {
    "min": min, "max": max, "sum": sum, "count": sum, "last": max, "mean": lambda vs: sum(vs) / len(vs),
}


def _matches(wanted: Mapping[str, str | list[str]], labels: Labels) -> bool:
    have = dict(labels)
    return all((have.get(k) in v) if isinstance(v, list) else have.get(k) == v for k, v in wanted.items())


def _written(value: float) -> str:
    """A non-finite value as the exposition format writes it."""
    return "NaN" if math.isnan(value) else ("+Inf" if value > 0 else "-Inf")


def _nodata_action(policy: Policy) -> str | None:
    return None if policy.on_nodata.action == "ignore" else policy.on_nodata.action


def _histogram_quantile(q: float, series: Mapping[Labels, Window]) -> tuple[float | None, int]:
    """Prometheus' histogram_quantile over the increase of each ``le`` bucket in the window."""
    from controller.analysis.histogram import histogram_quantile

    buckets: dict[float, float] = defaultdict(float)
    for labels, window in series.items():
        le = dict(labels).get("le")
        if le is None or not window.count():
            continue
        buckets[float(le)] += window.increase() or 0.0
    if not buckets:
        return None, 0
    total = buckets.get(math.inf, max(buckets.values()))
    if total <= 0:
        return None, 0
    value = histogram_quantile(q, sorted(buckets.items()))
    return (None if value is None or math.isnan(value) else value), int(total)
