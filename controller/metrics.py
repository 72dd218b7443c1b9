"""The controller's own Prometheus metrics (prefix ``canary_``), in a registry of their own."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from controller.analysis.verdict import Outcome, Verdict


class ControllerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.policy_verdict = Gauge(
            "canary_policy_verdict", "1 for the policy's current outcome, 0 for the others.",
            ["policy", "outcome"], registry=self.registry)
        self.policy_value = Gauge(
            "canary_policy_value", "The value the policy last measured (NaN when it had none).",
            ["policy"], registry=self.registry)
        self.policy_threshold = Gauge(
            "canary_policy_threshold", "The threshold the policy's condition last compared against.",
            ["policy"], registry=self.registry)
        self.policy_breaches = Counter(
            "canary_policy_breaches_total", "Confirmed policy failures (a failure counts once until it clears).",
            ["policy", "action"], registry=self.registry)
        self.observation_age = Gauge(
            "canary_observation_age_seconds", "Age of the newest successful read of each source.",
            ["source"], registry=self.registry)
        self._failing: set[str] = set()

    def record_verdicts(self, verdicts: Iterable[Verdict]) -> None:
        for verdict in verdicts:
            for outcome in Outcome:
                self.policy_verdict.labels(verdict.policy, outcome.value).set(1 if outcome is verdict.outcome else 0)
            self.policy_value.labels(verdict.policy).set(float("nan") if verdict.value is None else verdict.value)
            if verdict.threshold is not None:
                self.policy_threshold.labels(verdict.policy).set(verdict.threshold)
            if verdict.outcome is Outcome.FAIL and verdict.policy not in self._failing:
                self._failing.add(verdict.policy)
                self.policy_breaches.labels(verdict.policy, verdict.action or "none").inc()
            elif verdict.outcome is not Outcome.FAIL:
                self._failing.discard(verdict.policy)

    def render(self) -> bytes:
        return generate_latest(self.registry)
