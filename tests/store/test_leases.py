"""Rollout leases on both engines: a claim, a renewal, a takeover at a higher epoch, the fence that refuses
the old owner's writes (audited, nothing changed), and one active rollout per account as a constraint."""

from __future__ import annotations

import asyncio
import logging

import pytest

from controller.errors import ConflictError
from controller.release_files import read_release
from controller.rollout.decide import State, Status
from controller.rollout.info import create_rollout, get_rollout, save_decision
from controller.rollout.pipeline import Pipeline
from controller.config.yamlfile import load_model_text
from controller.store import audit, leases
from controller.store.commands import ack_command, get_command, submit_command
from controller.store.deployments import live_deployment, record_intent
from controller.store.leases import Fence, FencingRefused
from controller.store.releases import add_release
from tests.support.checkout import EXAMPLES

CANARY = """\
name: canary-only
stages:
  - {name: C, environment: sim, account: canary, duration: 1h, policies: stage-c.yaml, capital_cap: 0.02}
"""


async def _releases(db, clock) -> None:
    for version in ("1.0.0", "1.1.0"):
        await add_release(db, clock, read_release(version, EXAMPLES / "demo" / "manifest.yaml",
                                                  EXAMPLES / "reference-bot" / "strategy.yaml"), actor="tester")


def _pipeline(text: str) -> Pipeline:
    return load_model_text(Pipeline, text, "pipeline.yaml")


async def _events(db, kind: str) -> list:
    return [e async for e in audit.query(db, audit.AuditFilter(kind=kind))]


async def test_a_taken_over_owner_is_fenced_off_its_writes_refused_and_audited(db, clock):
    await _releases(db, clock)
    info = await create_rollout(db, clock, version="1.1.0", pipeline=_pipeline(CANARY), actor="tester")

    [(first, previous)] = await leases.claim(db, clock, "host-a:1", seconds=60)
    assert (first.rollout_id, first.owner, first.epoch, previous) == (info.id, "host-a:1", 1, "")
    assert await leases.claim(db, clock, "host-b:2", seconds=60) == []  # held and not expired: nobody takes it
    assert await leases.renew(db, "host-a:1", {info.id: 1}, seconds=60) == set()

    owner_a = db.guarded(Fence(info.id, 1, "host-a:1", clock))
    info = await save_decision(owner_a, clock, info, State(status=Status.PROMOTING))
    assert info.status is Status.PROMOTING

    # host-a stops renewing: its lease lapses (renewed for 0 s: expired at once) and host-b takes it over.
    assert await leases.renew(db, "host-a:1", {info.id: 1}, seconds=0) == set()
    [(second, previous)] = await leases.claim(db, clock, "host-b:2", seconds=60)
    assert (second.owner, second.epoch, previous) == ("host-b:2", 2, "host-a:1")
    [taken] = await _events(db, "lease.taken_over")
    assert (taken.payload["previous_owner"], taken.payload["previous_epoch"], taken.payload["epoch"]) == \
        ("host-a:1", 1, 2)

    # Every kind of write host-a makes about the rollout is refused and changes nothing.
    command = await submit_command(db, clock, rollout_id=info.id, kind="pause", actor="tester")
    with pytest.raises(FencingRefused, match="epoch 1 was refused.*epoch 2, owned by host-b:2"):
        await save_decision(owner_a, clock, info, State(status=Status.ROLLING_BACK))
    with pytest.raises(FencingRefused):
        await record_intent(owner_a, clock, rollout_id=info.id, environment="sim", account="canary",
                            instance="sim-canary", release="1.1.0", settings_before=None)
    assert (await get_rollout(db, info.id)).status is Status.PROMOTING
    assert await live_deployment(db, "sim", "canary") is None
    assert (await get_command(db, command.id)).acked_at is None
    refused = await _events(db, "fencing.refused")
    assert [(e.payload["owner"], e.payload["epoch"], e.payload["current_epoch"], e.payload["current_owner"])
            for e in refused] == [("host-a:1", 1, 2, "host-b:2")] * 2
    assert await leases.renew(db, "host-a:1", {info.id: 1}, seconds=60) == {info.id}  # it learns it lost

    owner_b = db.guarded(Fence(info.id, 2, "host-b:2", clock))
    info = await save_decision(owner_b, clock, info, State(status=Status.ROLLING_BACK))
    assert info.status is Status.ROLLING_BACK
    assert (await audit.verify(db)).ok


class _CancelAtRefusal(logging.Handler):
    """Cancels the writer the moment its refusal is logged: what the daemon's lease loop does when it finds
    the lease gone while the runner's write is being refused."""

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg == "fencing_refused":
            asyncio.current_task().cancel()


async def test_a_refusal_is_audited_even_when_the_refused_writer_is_cancelled_at_once(db, clock):
    await _releases(db, clock)
    info = await create_rollout(db, clock, version="1.1.0", pipeline=_pipeline(CANARY), actor="tester")
    await leases.claim(db, clock, "host-a:1", seconds=0)  # expired at once
    await leases.claim(db, clock, "host-b:2", seconds=60)  # epoch 2: host-a's epoch 1 is fenced off
    owner_a = db.guarded(Fence(info.id, 1, "host-a:1", clock))

    canceller = _CancelAtRefusal()
    logging.getLogger("controller.store.leases").addHandler(canceller)
    try:
        writer = asyncio.create_task(save_decision(owner_a, clock, info, State(status=Status.PROMOTING)))
        with pytest.raises(asyncio.CancelledError):
            await writer
    finally:
        logging.getLogger("controller.store.leases").removeHandler(canceller)
    await leases.refusals_recorded()
    [refused] = await _events(db, "fencing.refused")
    assert (refused.payload["owner"], refused.payload["epoch"], refused.payload["current_owner"]) == \
        ("host-a:1", 1, "host-b:2")
    assert (await get_rollout(db, info.id)).status is Status.PENDING


async def test_an_acknowledgement_is_compare_and_set(db, clock):
    await _releases(db, clock)
    command = await submit_command(db, clock, rollout_id=None, kind="place", actor="tester",
                                   args={"release": "1.0.0", "environment": "sim", "account": "master"})
    assert await ack_command(db, clock, command.id, accepted=True, message="first", audit_kind="command.place")
    assert not await ack_command(db, clock, command.id, accepted=False, message="second", audit_kind="command.place")
    answered = await get_command(db, command.id)
    assert (answered.outcome, answered.message) == ("accepted", "first")
    assert len(await _events(db, "command.place")) == 1


async def test_one_active_rollout_per_account_even_when_two_starts_race(db, clock):
    await _releases(db, clock)
    started = await asyncio.gather(
        *(create_rollout(db, clock, version=v, pipeline=_pipeline(CANARY), actor="tester") for v in ("1.0.0", "1.1.0")),
        return_exceptions=True)
    assert sorted(type(s).__name__ for s in started) == ["ConflictError", "RolloutInfo"]
    [winner] = [s for s in started if not isinstance(s, BaseException)]
    with pytest.raises(ConflictError):
        await create_rollout(db, clock, version="1.0.0", pipeline=_pipeline(CANARY), actor="tester")
    await save_decision(db, clock, winner, State(status=Status.ROLLED_BACK))  # finished: the account is free
    again = await create_rollout(db, clock, version="1.0.0", pipeline=_pipeline(CANARY), actor="tester")
    assert again.status is Status.PENDING
