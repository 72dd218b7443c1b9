"""A controller registry with a series in every metric family: what a scrape of a daemon that has
judged, rolled back and answered a command shows (labelled families appear once something sets them)."""

from __future__ import annotations

from controller.analysis.verdict import Outcome, Verdict
from controller.metrics import ControllerMetrics


def every_family_set() -> ControllerMetrics:
    metrics = ControllerMetrics()
    metrics.record_verdicts([Verdict(policy="a-mismatch", outcome=Outcome.FAIL, at=0.0, value=2.0, threshold=0.0,
                                     condition="== 0", window=60.0, samples=1, action="rollback")])
    metrics.observation_age.labels("exchange").set(1.0)
    metrics.set_rollout_state(1, "v1", "running")
    metrics.set_rollout_stage(1, "v1", "C")
    metrics.set_stage_remaining(1, 60.0)
    metrics.set_digest(1, 3600.0, 3600.0)
    metrics.set_signoffs_overdue(1, 0)
    metrics.rollback_started("policy")
    metrics.rollback_failed("flatten")
    metrics.rollback_finished(1.0)
    metrics.observe_detection(0.01)
    metrics.set_weight_used("canary", 10)
    metrics.set_stream_connected("canary", True)
    metrics.watch_exchange_gate("fapi.binance.com", lambda: 0.0)
    metrics.exchange_request_refused("rate_limited")
    metrics.command_handled("pause", "accepted")
    metrics.runner_crashed(1)
    metrics.store_error()
    metrics.set_source_up("canary", "exchange", True)
    metrics.source_restarted("canary", "bot")
    metrics.started(1.0)
    metrics.set_leases_owned(1)
    metrics.leases_renewed(1.0, 9.0)
    metrics.observations_were_rejected({"nan": 1})
    return metrics
