"""The controller's own Prometheus metrics (prefix ``canary_``), in a registry of their own.

One `ControllerMetrics` per daemon; the engines call its methods and the admin server exposes
``registry``. Names follow Prometheus conventions (``_total`` counters, base units such as
``_seconds``); `EXPORTED_NAMES` lists every series name the exposition can carry, so alert
rules and dashboards can be checked against it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from controller.analysis.verdict import Outcome, Verdict
from controller.clock import Clock, RealClock

ROLLOUT_STATES = ("pending", "running", "awaiting_signoff", "promoting", "promoted", "paused",
                  "rolling_back", "rolled_back", "failed", "dry_run_done")
"""Every state a rollout can be in: ``canary_rollout_state`` exports each, 1 for the current one."""

FINISHED_STATES = frozenset({"promoted", "rolled_back", "dry_run_done"})
"""A rollout's states once it has ended (`decide.TERMINAL`; a test keeps them equal)."""

FINISHED_SERIES_GRACE = 3600.0
"""How long a finished rollout's labelled series stay on /metrics (its last state for dashboards and
alerts to see) before they are removed: without it every rollout ever run would stay a series."""

ROLLBACK_TRIGGERS = ("policy", "operator", "deadline", "waiting", "placement", "ramp")
"""What starts a rollback: a failed policy, a stage's progress deadline, an operator's command, a wait
past its deadline (``on_waiting_deadline: rollback``), a failed placement, a capital ramp step not funded."""

REJECTION_REASONS = ("nan", "inf")
"""Why the analysis refuses a sample: ``canary_observations_rejected_total`` has each from the start."""

# A rollback restores the previous release's unit and config: well under a second on the
# simulator, up to a couple of minutes when a flatten waits on the exchange.
ROLLBACK_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)
# From the exchange's event time to the breach verdict: milliseconds on the user stream,
# up to a scrape plus an analysis interval (tens of seconds) through bot metrics.
DETECTION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0)


class ControllerMetrics:
    """Every ``canary_*`` series; methods take domain values, never label plumbing."""

    def __init__(self, clock: Clock | None = None, *, finished_grace: float = FINISHED_SERIES_GRACE) -> None:
        self._clock = clock or RealClock()
        self._finished_grace = finished_grace
        self._finished: dict[str, float] = {}  # rollout -> when it was seen finished, on the clock
        self.registry = r = CollectorRegistry(auto_describe=True)
        # ``group``: the group a policy judged per symbol or bucket speaks of (``symbol=BTCUSDT``),
        # empty for a policy judged as a whole; each group's outcome is its own series.
        self.policy_verdict = Gauge(
            "canary_policy_verdict", "1 for the policy group's current outcome, 0 for the others.",
            ["policy", "group", "outcome"], registry=r)
        self.policy_value = Gauge(
            "canary_policy_value", "The value the policy group last measured (NaN when it had none).",
            ["policy", "group"], registry=r)
        self.policy_threshold = Gauge(
            "canary_policy_threshold", "The threshold the policy group's condition last compared against.",
            ["policy", "group"], registry=r)
        self.policy_pending = Gauge(
            "canary_policy_pending", "1 while the policy group's condition is false and its `for` has not run "
            "out (a pass about to fail), 0 otherwise.", ["policy", "group"], registry=r)
        self.policy_breaches = Counter(
            "canary_policy_breaches_total", "Confirmed policy failures, once per transition of a group into fail.",
            ["policy", "group", "action"], registry=r)
        self.observation_age = Gauge(
            "canary_observation_age_seconds", "Age of the newest successful read of each source.",
            ["source"], registry=r)
        self.rollout_state = Gauge(
            "canary_rollout_state", "1 for the rollout's current state, 0 for the other known states.",
            ["rollout", "release", "state"], registry=r)
        self.rollout_stage = Gauge(
            "canary_rollout_stage_info", "The stage the rollout is in (always 1; the stage is the label).",
            ["rollout", "release", "stage"], registry=r)
        self.stage_remaining = Gauge(
            "canary_stage_time_remaining_seconds", "Time left before the rollout's current stage may complete; "
            "while it waits (paused or awaiting sign-off), before its waiting deadline (0: overdue).",
            ["rollout"], registry=r)
        self.digest_last = Gauge(
            "canary_digest_last_timestamp_seconds", "The end of the newest period whose verdict digest was "
            "written (the stage's start before the first), for stages with a digest schedule.",
            ["rollout"], registry=r)
        self.digest_interval = Gauge(
            "canary_digest_interval_seconds", "The length of the next digest period: the next digest is due "
            "that long after canary_digest_last_timestamp_seconds.", ["rollout"], registry=r)
        self.signoffs_overdue = Gauge(
            "canary_signoffs_overdue", "Periods of recurring sign-offs (a daily standup review) that ended "
            "unsigned and are still unsigned, in the rollout's current stage.", ["rollout"], registry=r)
        self.rollbacks = Counter(
            "canary_rollbacks_total", "Rollbacks started, by what triggered them (policy or operator).",
            ["trigger"], registry=r)
        self.rollback_failures = Counter(
            "canary_rollback_failures_total", "Rollback steps that failed, by step.", ["step"], registry=r)
        self.rollback_duration = Histogram(
            "canary_rollback_duration_seconds", "From a rollback's start to the previous release running again.",
            buckets=ROLLBACK_BUCKETS, registry=r)
        self.detection_latency = Histogram(
            "canary_detection_latency_seconds", "From the exchange's event time to the breach verdict.",
            buckets=DETECTION_BUCKETS, registry=r)
        self.weight_used = Gauge(
            "canary_exchange_weight_used", "Request weight the account used in Binance's current minute "
            "(X-MBX-USED-WEIGHT-1M).", ["account"], registry=r)
        self.exchange_blocked = Gauge(
            "canary_exchange_blocked_seconds", "Seconds before any request may leave for the exchange host again "
            "(the Retry-After of its last 429, or its 418 ban); 0 when requests may leave.", ["host"], registry=r)
        self.exchange_refused = Counter(
            "canary_exchange_requests_refused_total", "Requests the controller held back without sending: during a "
            "429's back-off (rate_limited), a 418 ban (banned), or over its weight budget (budget).",
            ["reason"], registry=r)
        self.stream_connected = Gauge(
            "canary_stream_connected", "1 while the account's user-data stream is connected.",
            ["account"], registry=r)
        self.operator_commands = Counter(
            "canary_operator_commands_total", "Operator commands the daemon handled, by kind and outcome.",
            ["kind", "outcome"], registry=r)
        self.runner_crashes = Counter(
            "canary_runner_crashes_total", "Rollout runners that stopped with an error; each is restarted after "
            "an exponential backoff.", ["rollout"], registry=r)
        self.store_errors = Counter(
            "canary_store_errors_total", "Turns of the daemon's main loop that failed on the database; the loop "
            "backs off and tries again.", registry=r)
        self.source_up = Gauge(
            "canary_source_up", "1 while the source's last read succeeded, 0 while it fails or restarts.",
            ["account", "source"], registry=r)
        self.source_restarts = Counter(
            "canary_source_restarts_total", "Sources of a verification that stopped (failed or ended) and were "
            "restarted after a backoff.", ["account", "source"], registry=r)
        self.leases_owned = Gauge(
            "canary_leases_owned", "Rollouts this daemon owns (holds the lease of) and acts on; 0: a standby.",
            registry=r)
        self.lease_takeovers = Counter(
            "canary_lease_takeovers_total", "Rollout leases this daemon took over from another daemon whose "
            "lease had expired.", registry=r)
        self.lease_renewed = Gauge(
            "canary_lease_renewed_timestamp_seconds", "When this daemon last renewed the leases it holds and "
            "claimed those free (seconds since the epoch); a standby renews nothing but says it could.",
            registry=r)
        self.lease_length = Gauge(
            "canary_lease_seconds", "The length of a rollout lease (lease_seconds): renewed every third of it.",
            registry=r)
        self.start_time = Gauge(
            "canary_daemon_start_time_seconds", "When the daemon started, in seconds since the epoch.",
            registry=r)
        for trigger in ROLLBACK_TRIGGERS:  # every series exists from the start, so rate() sees the first one
            self.rollbacks.labels(trigger)
        self.observations_rejected = Counter(
            "canary_observations_rejected_total", "Samples the analysis refused (NaN or an infinity), by reason; "
            "each leaves its group without data until a finite sample arrives.", ["reason"], registry=r)
        for reason in REJECTION_REASONS:
            self.observations_rejected.labels(reason)
        self._failing: set[tuple[str, str]] = set()  # (policy, group) now failing
        # Per policy, its group now pending: a policy's verdict speaks for its worst group, so the
        # group that was pending is cleared when another group's verdict says the policy is not.
        self._pending: dict[str, str] = {}
        self._rollout_release: dict[str, str] = {}
        self._rollout_stage: dict[str, tuple[str, str]] = {}

    def record_verdicts(self, verdicts: Iterable[Verdict]) -> None:
        for verdict in verdicts:
            where = (verdict.policy, verdict.group_key)
            for outcome in Outcome:
                self.policy_verdict.labels(*where, outcome.value).set(1 if outcome is verdict.outcome else 0)
            self.policy_value.labels(*where).set(float("nan") if verdict.value is None else verdict.value)
            if verdict.threshold is not None:
                self.policy_threshold.labels(*where).set(verdict.threshold)
            if verdict.outcome is Outcome.FAIL and where not in self._failing:
                self._failing.add(where)
                self.policy_breaches.labels(*where, verdict.action or "none").inc()
            elif verdict.outcome is not Outcome.FAIL:
                self._failing.discard(where)
            self._set_pending(verdict)

    def _set_pending(self, verdict: Verdict) -> None:
        was = self._pending.pop(verdict.policy, None)
        if was is not None and was != verdict.group_key:
            self.policy_pending.labels(verdict.policy, was).set(0)
        if verdict.pending:
            self._pending[verdict.policy] = verdict.group_key
        self.policy_pending.labels(verdict.policy, verdict.group_key).set(1 if verdict.pending else 0)

    def set_rollout_state(self, rollout_id: int, release: str, state: str) -> None:
        """Export ``state`` as the rollout's only state at 1; a rollout's earlier release label is dropped."""
        if state not in ROLLOUT_STATES:
            raise ValueError(f"unknown rollout state {state!r}: add it to ROLLOUT_STATES ({', '.join(ROLLOUT_STATES)})")
        rollout = str(rollout_id)
        previous = self._rollout_release.get(rollout)
        if previous is not None and previous != release:
            for known in ROLLOUT_STATES:
                self.rollout_state.remove(rollout, previous, known)
        self._rollout_release[rollout] = release
        for known in ROLLOUT_STATES:
            self.rollout_state.labels(rollout, release, known).set(1 if known == state else 0)
        if state in FINISHED_STATES:
            self._finished.setdefault(rollout, self._clock.time())
        else:
            self._finished.pop(rollout, None)

    def forget_finished(self) -> list[str]:
        """Remove every series labelled with a rollout that finished at least the grace period ago
        (state, stage, time left, runner crashes); returns those rollouts. Called at each scrape."""
        now = self._clock.time()
        gone = [rollout for rollout, at in self._finished.items() if now - at >= self._finished_grace]
        for rollout in gone:
            del self._finished[rollout]
            release = self._rollout_release.pop(rollout, None)
            if release is not None:
                for known in ROLLOUT_STATES:
                    self.rollout_state.remove(rollout, release, known)
            stage = self._rollout_stage.pop(rollout, None)
            if stage is not None:
                self.rollout_stage.remove(rollout, *stage)
            self.stage_remaining.remove(rollout)  # a series never set is no error
            self.forget_schedule(int(rollout))
            self.runner_crashes.remove(rollout)
        return gone

    def set_rollout_stage(self, rollout_id: int, release: str, stage: str) -> None:
        """Export the rollout's current stage; the previous stage's series goes, so only one exists."""
        rollout = str(rollout_id)
        previous = self._rollout_stage.get(rollout)
        if previous == (release, stage):
            return
        if previous is not None:
            self.rollout_stage.remove(rollout, *previous)
        self._rollout_stage[rollout] = (release, stage)
        self.rollout_stage.labels(rollout, release, stage).set(1)

    def set_stage_remaining(self, rollout_id: int, seconds: float) -> None:
        """Time left in the rollout's stage, or in its wait (`decide.time_left`); overdue shows 0, not a
        negative time."""
        self.stage_remaining.labels(str(rollout_id)).set(max(0.0, seconds))

    def set_digest(self, rollout_id: int, last: float, interval: float) -> None:
        """The newest digest's period end (Clock seconds) and how long after it the next one is due."""
        self.digest_last.labels(str(rollout_id)).set(last)
        self.digest_interval.labels(str(rollout_id)).set(interval)

    def set_signoffs_overdue(self, rollout_id: int, count: int) -> None:
        self.signoffs_overdue.labels(str(rollout_id)).set(count)

    def forget_schedule(self, rollout_id: int) -> None:
        """Remove the rollout's digest and sign-off series: its stage has no schedule (any more)."""
        for gauge in (self.digest_last, self.digest_interval, self.signoffs_overdue):
            gauge.remove(str(rollout_id))  # a series never set is no error

    def rollback_started(self, trigger: str) -> None:
        """Count a rollback by its trigger (`ROLLBACK_TRIGGERS`; another value gets its own series:
        a label must never be what stops a rollback)."""
        self.rollbacks.labels(trigger).inc()

    def rollback_finished(self, duration_seconds: float) -> None:
        self.rollback_duration.observe(duration_seconds)

    def rollback_failed(self, step: str) -> None:
        self.rollback_failures.labels(step).inc()

    def observe_detection(self, seconds: float) -> None:
        """A breach verdict, ``seconds`` after the exchange event that caused it."""
        self.detection_latency.observe(seconds)

    def set_weight_used(self, account: str, weight: float) -> None:
        self.weight_used.labels(account).set(weight)

    def watch_exchange_gate(self, host: str, seconds_left: Callable[[], float]) -> None:
        """Export the host's gate: ``seconds_left`` is read at each scrape, so the gauge counts down."""
        self.exchange_blocked.labels(host).set_function(seconds_left)

    def exchange_request_refused(self, reason: str) -> None:
        self.exchange_refused.labels(reason).inc()

    def set_stream_connected(self, account: str, connected: bool) -> None:
        self.stream_connected.labels(account).set(1 if connected else 0)

    def command_handled(self, kind: str, outcome: str) -> None:
        self.operator_commands.labels(kind, outcome).inc()

    def runner_started(self, rollout_id: int) -> None:
        """A runner for the rollout exists: its crash series starts at 0, so that increase() sees the first crash."""
        self.runner_crashes.labels(str(rollout_id))

    def runner_crashed(self, rollout_id: int) -> None:
        self.runner_crashes.labels(str(rollout_id)).inc()

    def set_source_up(self, account: str | None, source: str, up: bool) -> None:
        self.source_up.labels(account or "", source).set(1 if up else 0)

    def source_restarted(self, account: str | None, source: str) -> None:
        self.source_restarts.labels(account or "", source).inc()

    def store_error(self) -> None:
        self.store_errors.inc()

    def set_leases_owned(self, count: int) -> None:
        self.leases_owned.set(count)

    def lease_taken_over(self) -> None:
        self.lease_takeovers.inc()

    def leases_renewed(self, ts: float, seconds: float) -> None:
        """A lease turn succeeded at ``ts`` (wall seconds since the epoch), with leases ``seconds`` long."""
        self.lease_renewed.set(ts)
        self.lease_length.set(seconds)

    def started(self, ts: float) -> None:
        """The daemon's start, in seconds since the epoch (wall time, so dashboards can show uptime)."""
        self.start_time.set(ts)

    def observations_were_rejected(self, counts: Mapping[str, int]) -> None:
        """Add what an evaluator refused since it was last asked (`Evaluator.take_rejections`)."""
        for reason, count in counts.items():
            if count:
                self.observations_rejected.labels(reason).inc(count)

    def render(self) -> bytes:
        self.forget_finished()
        return generate_latest(self.registry)


# The series names each metric type adds to its family's name in the text exposition.
_TYPE_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("_sum", "_count", "_created"),
    "info": ("_info",),
    "gauge": ("",),
    "untyped": ("",),
    "unknown": ("",),
}


def exported_names(registry: CollectorRegistry) -> frozenset[str]:
    """Every sample name ``registry``'s exposition can carry (``canary_rollbacks_total``,
    ``canary_rollback_duration_seconds_bucket``, ...), derived from its families' types."""
    return frozenset(family.name + suffix
                     for family in registry.collect()
                     for suffix in _TYPE_SUFFIXES[family.type])


EXPORTED_NAMES: frozenset[str] = exported_names(ControllerMetrics().registry)
