"""Stage D as the checklist writes it, on decide's clock: verdict digests hourly then daily, and a
standup-review sign-off per day that the gate needs all of, a day left unsigned said overdue once."""

from __future__ import annotations

import pytest

from controller.errors import ConfigError
from controller.rollout.decide import Ack, Audit, Command, Plan, State, Status, WriteDigest, decide
from controller.rollout.pipeline import Pipeline, digest_count, load_pipeline
from controller.config.yamlfile import load_model_text

HOUR, DAY = 3600.0, 86400.0
PIPELINE = load_model_text(Pipeline, """
name: week
stages:
  - name: D
    environment: live
    account: master
    duration: 7d
    policies: stage-d.yaml
    signoffs: [{name: standup-review, every: 1d}, release-notes]
    digest: {every: 1h, first: 24h, then: 1d}
""", "week.yaml")
GATE = Plan(PIPELINE, gates={"D": frozenset({"d-fills"})})
START = 1_000.0


def running(**fields) -> State:
    return State(status=Status.RUNNING, stage=0, stage_started=START, passing={"d-fills": 0.0}, **fields)


def digests(state: State, now: float, written: int) -> list[WriteDigest]:
    decision = decide(state, [], [], START + now, plan=Plan(GATE.pipeline, GATE.gates, digests_written=written))
    return [a for a in decision.actions if isinstance(a, WriteDigest)]


def test_digests_are_hourly_for_the_first_day_then_daily():
    assert digests(running(), 59 * 60, 0) == []
    (first,) = digests(running(), HOUR, 0)
    assert (first.number, first.start, first.end) == (1, START, START + HOUR)
    assert [d.number for d in digests(running(), DAY, 23)] == [24]
    assert digests(running(), DAY + 23 * HOUR, 24) == []  # daily after the first day
    (daily,) = digests(running(), 2 * DAY, 24)
    assert (daily.number, daily.start, daily.end) == (25, START + DAY, START + 2 * DAY)
    assert digest_count(PIPELINE.stages[0].digest, PIPELINE.stages[0].duration) == 24 + 6


def test_missed_digests_are_all_asked_for_and_none_twice():
    assert [d.number for d in digests(running(), 3 * HOUR + 5, 0)] == [1, 2, 3]
    assert digests(running(), 3 * HOUR + 5, 3) == []


def test_no_digest_is_asked_for_while_the_count_is_unknown_or_the_stage_is_not_judged():
    assert decide(running(), [], [], START + 5 * HOUR, plan=GATE).actions == ()
    promoting = State(status=Status.PROMOTING, stage=0)
    assert digests(promoting, 5 * HOUR, 0) == []


def test_the_stage_asks_for_one_standup_review_per_day():
    assert PIPELINE.stages[0].signoff_items == [f"standup-review/day-{n}" for n in range(1, 8)] + ["release-notes"]


def signoff(state: State, now: float, *items: str, id: int = 1) -> tuple[State, Ack]:
    decision = decide(state, [], [Command(id, "signoff", "alice", stage="D", items=items)], START + now, plan=GATE)
    (ack,) = [a for a in decision.actions if isinstance(a, Ack)]
    return decision.state, ack


def test_a_standup_review_named_alone_signs_the_current_day():
    state, ack = signoff(running(), 2 * DAY + 5, "standup-review")
    assert ack.accepted, ack
    assert state.signoffs == {"D/standup-review/day-3": "alice"}
    assert "standup-review/day-3" in ack.message


def test_a_signoff_naming_no_item_signs_todays_review_and_the_plain_items():
    state, ack = signoff(running(), 5, )
    assert ack.accepted and state.signoffs == {"D/standup-review/day-1": "alice", "D/release-notes": "alice"}


def test_an_earlier_day_may_be_signed_late_but_a_day_not_begun_may_not():
    late, ack = signoff(running(), 3 * DAY, "standup-review/day-1")
    assert ack.accepted and "D/standup-review/day-1" in late.signoffs
    early, refused = signoff(running(), 3 * DAY, "standup-review/day-5")
    assert not refused.accepted and "standup-review/day-5 of stage D has not begun" in refused.message
    assert early.signoffs == {}
    _, unknown = signoff(running(), DAY, "standup-review/day-8")
    assert not unknown.accepted and "standup-review (every 86400 s: standup-review/day-N)" in unknown.message


def test_the_gate_waits_for_all_seven_days():
    six = {f"D/standup-review/day-{n}": "bob" for n in range(1, 7)} | {"D/release-notes": "bob"}
    decision = decide(running(signoffs=six), [], [], START + 7 * DAY, plan=GATE)
    assert decision.state.status is Status.AWAITING_SIGNOFF
    assert "standup-review/day-7" in decision.state.reason
    seven = {**six, "D/standup-review/day-7": "bob"}
    decision = decide(running(signoffs=seven), [], [], START + 7 * DAY, plan=GATE)
    assert decision.state.status is Status.PROMOTED


def overdue(decision) -> list[str]:
    return [a.payload["item"] for a in decision.actions if isinstance(a, Audit) and a.kind == "signoff.overdue"]


def test_a_day_that_ends_unsigned_is_said_overdue_once():
    assert overdue(decide(running(), [], [], START + DAY - 1, plan=GATE)) == []
    first = decide(running(), [], [], START + DAY, plan=GATE)
    assert overdue(first) == ["standup-review/day-1"]
    assert first.state.overdue_signoffs == ("D/standup-review/day-1",)
    again = decide(State.from_json(first.state.to_json()), [], [], START + DAY + 60, plan=GATE)
    assert overdue(again) == []
    signed = running(signoffs={"D/standup-review/day-1": "bob"})
    assert overdue(decide(signed, [], [], START + 2 * DAY, plan=GATE)) == ["standup-review/day-2"]


@pytest.mark.parametrize("stage, expected", [
    ("signoffs: [{name: standup-review, every: 8d}]", "longer than the stage's duration"),
    ("signoffs: [{name: standup-review, every: 1m}]", "more than 1000 sign-offs"),
    ("digest: {every: 7h, first: 24h}", "whole number of periods"),
    ("digest: {every: 1s, first: 0s, then: 1s}", "more than 1000 digests"),
    ("signoffs: [standup-review, {name: standup-review, every: 1d}]", "listed twice"),
])
def test_a_schedule_that_cannot_be_kept_is_refused_with_its_field(stage, expected):
    text = f"""
name: week
stages:
  - name: D
    environment: live
    account: master
    duration: 7d
    policies: stage-d.yaml
    {stage}
"""
    with pytest.raises(ConfigError, match=expected):
        load_model_text(Pipeline, text, "week.yaml")


def test_the_shipped_pipelines_d_lasts_its_week_with_digests_and_daily_standups():
    stage = load_pipeline().stage("D")
    assert stage.duration == 7 * DAY
    assert stage.digest is not None and (stage.digest.every, stage.digest.first, stage.digest.then) == (HOUR, DAY, DAY)
    assert [i for i in stage.signoff_items if i.startswith("standup-review/")] == [
        f"standup-review/day-{n}" for n in range(1, 8)]
