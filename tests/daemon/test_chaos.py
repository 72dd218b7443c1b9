"""Three daemons on one PostgreSQL, one killed and one paused while rollouts run: one owner per rollout.

Real processes throughout (tests/support/fleet.py): the suite's PostgreSQL, three `canaryctl run`
daemons with state folders of their own (three hosts) and ``lease_seconds: 2``, one simulator
process per exchange environment (``ex1``..``ex3``, the ``canary`` account of each), and the
reference bot. 30 rollouts, one after the other (the store keeps one rollout under way at a time),
go round the environments: healthy releases (``strategy.yaml``) pass a 2-second stage judged by
the shipped leverage policies and are promoted; defective ones (``strategy-defect-leverage.yaml``:
SOLUSDT at leverage 10, its config says 3) are rolled back by those policies, which restores the
release the previous rollout promoted there. In the middle:

- the 12th rollout (defective): its owner is SIGKILLed while its rollback is under way (the plan
  written, its first step not done); another daemon takes it over (the time from the kill to the new
  lease is printed: ``takeover_ms``) and finishes the rollback;
- the 19th (healthy): its owner is held dead once it started the bot, before it records the
  placement (the ``placement.started.after`` failpoint, armed as a hold on every daemon), and
  SIGSTOPped once another daemon took the rollout over; that one places the release again, and after
  more than a lease the paused daemon gets SIGCONT: its late write (the placement's) is refused and
  audited ``fencing.refused``, unless its renewal finds the lease gone first (then it writes
  nothing); either way nothing it did after resuming landed.

What "exactly once" means for a rollback, from its stored steps and the simulator's request log
(``GET /sim/requests``: the controller's requests, ``User-Agent: canary-controller``, on the
account, from a step's first start to the start of the step after it):

- ``cancel_orders``: per symbol, at least one ``DELETE /fapi/v1/allOpenOrders`` and no more than the
  step's recorded attempts. A retry after a takeover repeats the cancel (it finds nothing left, so it
  changes nothing) and is recorded as an attempt; an attempt recorded by a daemon killed before it
  sent anything sends none; a cancel beyond the attempts is one nobody recorded: a stale daemon acting.
- ``restore_leverage``: per symbol, at least one ``POST /fapi/v1/leverage`` at the previous release's
  leverage and no more than the attempts, and none at another value.
- ``positions``: per symbol, at most one accepted closing order (its client id is derived from the
  plan, so a repeat is refused by the exchange).
- every step is ``done``, audited ``rollback.step.done`` exactly once.

A bot is told apart by its client order ids (``bot-<run id>-<n>``, reference_bot/orders.py): two
bots trade one account at once when their first-to-last order spans overlap by more than a lease.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from controller.rollout.decide import Status
from controller.rollout.info import get_rollout
from controller.rollout.rollback import load_plan
from controller.store import audit, leases
from controller.store.models import RollbackStep, Rollout
from tests.daemon.harness import Processes, log_events, poll
from tests.support.fleet import ACCOUNT, Fleet

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.timeout(1200)]

LEASE = 2.0
ROLLOUTS = 30
ENVIRONMENTS = 3
KILLED_AT, PAUSED_AT = 11, 18
"""The rollouts (counted from 0) during which a daemon is SIGKILLed, and one SIGSTOPped."""
STAGE = "2s"
CONTROLLER_AGENT = "canary-controller"


def defective(index: int) -> bool:
    """Every fourth rollout from the fourth on; each environment's first rollout is healthy, so that a
    rollback always has a release to restore."""
    return index % 4 == 3


@dataclass
class Chaos:
    """What happened, read once every rollout ended; the tests only look at it."""

    lease: float
    finals: dict[int, tuple[str, Status, bool]] = field(default_factory=dict)
    """rollout id -> (environment, final status, defective)."""
    plans: dict[int, list[RollbackStep]] = field(default_factory=dict)
    """rollout id -> its rollback's stored steps (with their times), in plan order."""
    requests: dict[str, list[dict]] = field(default_factory=dict)
    events: list[audit.AuditRecord] = field(default_factory=list)
    verified: bool = False
    epochs: dict[int, tuple[int, int]] = field(default_factory=dict)
    """rollout id -> (the rollout's epoch, its lease's epoch)."""
    killed_owner: str = ""
    killed_rollout: int = 0
    takeover_ms: float = 0.0
    paused_owner: str = ""
    paused_rollout: int = 0
    resumed_at: float = 0.0
    paused_log: list[dict] = field(default_factory=list)
    logs: dict[str, list[dict]] = field(default_factory=dict)


@pytest.fixture(scope="module")
def chaos(postgres_server, tmp_path_factory) -> Chaos:
    root = tmp_path_factory.mktemp("chaos")
    processes = Processes(root)
    try:
        return asyncio.run(_run(root, processes, postgres_server.create_database("chaos")))
    finally:
        processes.close()


async def _run(root: Path, processes: Processes, db_url: str) -> Chaos:
    fleet = Fleet(root, processes, db_url, environments=ENVIRONMENTS, lease_seconds=LEASE)
    record = Chaos(LEASE)
    try:
        await fleet.start(daemons=3, hold_placements=True)
        for index in range(ROLLOUTS):
            await fleet.record_release(f"1.{index}.0", defective=defective(index))
        for index in range(ROLLOUTS):
            environment = fleet.environment_names[index % ENVIRONMENTS]
            if index == PAUSED_AT:
                rollout_id = await _pause_during_placement(fleet, record, environment, f"1.{index}.0")
            else:
                rollout_id = (await fleet.start_rollout(environment, f"1.{index}.0", duration=STAGE)).id
            if index == KILLED_AT:
                await _kill_during_rollback(fleet, record, rollout_id)
            final = await fleet.ended(rollout_id, timeout=90)
            record.finals[rollout_id] = (environment, final.status, defective(index))
        await _read(fleet, record)
        return record
    finally:
        await fleet.close()


async def _kill_during_rollback(fleet: Fleet, record: Chaos, rollout_id: int) -> None:
    """SIGKILL the owner once the rollback's plan is written and its first step not yet done."""
    async def rolling_back():
        info = await get_rollout(fleet.db, rollout_id)
        assert info.status not in (Status.ROLLED_BACK, Status.FAILED, Status.PROMOTED), info.state
        plan = await load_plan(fleet.db, rollout_id) if info.status is Status.ROLLING_BACK else []
        return plan if plan and plan[0].state != "done" else None

    await poll(rolling_back, timeout=60, every=0.02, what=f"rollout {rollout_id}'s rollback to start")
    owner = (await fleet.owner_of(rollout_id)).owner
    killed_at = fleet.kill(fleet.by_owner(owner))
    _, record.takeover_ms = await fleet.taken_over(rollout_id, owner, killed_at, timeout=10 * LEASE)
    record.killed_owner, record.killed_rollout = owner, rollout_id


async def _pause_during_placement(fleet: Fleet, record: Chaos, environment: str, version: str) -> int:
    """A daemon held dead once it started the rollout's bot, before it records the placement (the
    ``placement.started.after`` failpoint), then SIGSTOPped once another daemon took the rollout over;
    the hold ends, the new owner places the release, and after more than a lease the paused daemon
    gets SIGCONT: its next write, the placement's, must be refused."""
    with fleet.holding_placements():
        rollout = await fleet.start_rollout(environment, version, duration=STAGE)
        owner = (await fleet.owner_of(rollout.id)).owner
        paused = fleet.by_owner(owner)
        await fleet.taken_over(rollout.id, owner, time.time(), timeout=30)
        os.kill(paused.process.pid, signal.SIGSTOP)
        stopped_at = time.time()
    try:
        await fleet.until(rollout.id, frozenset({Status.RUNNING, Status.PROMOTED, Status.ROLLING_BACK,
                                                 Status.ROLLED_BACK, Status.FAILED}), timeout=60)

        async def lease_outlived():  # the pause's length is the point here: longer than a lease
            return time.time() - stopped_at > 1.5 * LEASE
        await poll(lease_outlived, timeout=2 * LEASE, what="the pause to outlast a lease")
    finally:
        record.resumed_at = time.time()
        os.kill(paused.process.pid, signal.SIGCONT)
    record.paused_owner, record.paused_rollout = owner, rollout.id

    async def let_go():  # the resumed daemon's write is refused, and it lets the rollout go
        return [e for e in log_events(paused.log) if e.get("rollout") == rollout.id
                and e.get("event") in ("rollout_lost", "fencing_refused")]
    await poll(let_go, timeout=10 * LEASE, what=f"the resumed {paused.name} to let rollout {rollout.id} go")
    return rollout.id


async def _read(fleet: Fleet, record: Chaos) -> None:
    async with fleet.db.read() as session:
        for row in (await session.execute(select(RollbackStep).order_by(RollbackStep.rollout_id,
                                                                        RollbackStep.position))).scalars():
            record.plans.setdefault(row.rollout_id, []).append(row)
        rollout_epochs = dict((await session.execute(select(Rollout.id, Rollout.epoch))).all())
    for environment in fleet.environment_names:
        record.requests[environment] = await fleet.requests(environment)
    record.events = [e async for e in audit.query(fleet.db, audit.AuditFilter())]
    record.verified = (await audit.verify(fleet.db)).ok
    held = await leases.leases(fleet.db)
    for rollout_id in record.finals:
        record.epochs[rollout_id] = (rollout_epochs[rollout_id], held[rollout_id].epoch)
    record.logs = {d.owner: log_events(d.log) for d in fleet.daemons}
    record.paused_log = record.logs[record.paused_owner]


# ------------------------------------------------------------------ the checks


def test_every_rollout_ends_in_its_right_state(chaos):
    assert len(chaos.finals) == ROLLOUTS
    wrong = {rollout: (status, "defective" if bad else "healthy") for rollout, (_, status, bad) in chaos.finals.items()
             if status is not (Status.ROLLED_BACK if bad else Status.PROMOTED)}
    assert not wrong, wrong


def test_the_killed_daemons_rollout_was_taken_over(chaos, capsys):
    taken = [e for e in chaos.events if e.kind == "lease.taken_over"
             and e.payload["rollout"] == chaos.killed_rollout and e.payload["previous_owner"] == chaos.killed_owner]
    assert taken, "no lease.taken_over of the killed daemon's rollout"
    with capsys.disabled():
        print(f"\nchaos: takeover_ms={chaos.takeover_ms:.0f} (SIGKILL of {chaos.killed_owner} during rollout "
              f"{chaos.killed_rollout}'s rollback; lease {chaos.lease:g} s, renewed every {chaos.lease / 3:.2f} s)")


def test_the_paused_daemons_late_writes_were_refused_and_none_landed(chaos):
    # Resumed, it either sends its pending write (the placement's), which must be refused and audited,
    # or its lease loop runs first and finds the lease gone, and it writes nothing: which of the two
    # comes first after SIGCONT is the event loop's choice.
    refused = [e for e in chaos.events if e.kind == "fencing.refused" and e.payload["owner"] == chaos.paused_owner]
    said_refused = [e for e in chaos.paused_log if e.get("event") == "fencing_refused"]
    lost = [e for e in chaos.paused_log if e.get("event") == "rollout_lost" and e.get("rollout") == chaos.paused_rollout]
    assert refused or lost, "the resumed daemon neither had a write refused nor found its lease gone"
    assert [e.payload["rollout"] for e in refused] == [e["rollout"] for e in said_refused], \
        "a refusal it logged was not audited (or the reverse)"
    assert {e.payload["rollout"] for e in refused} <= {chaos.paused_rollout}, refused
    for event in refused:  # a refusal names the owner that holds the rollout now
        assert event.payload["current_owner"] != chaos.paused_owner and \
            event.payload["current_epoch"] > event.payload["epoch"], event.payload
    # No transition of the rollout it logged after it resumed: a transition is logged once written.
    late = [e for e in chaos.paused_log if e.get("event") == "rollout_event" and " -> " in e.get("text", "")
            and _when(e) > chaos.resumed_at and e.get("rollout") == chaos.paused_rollout]
    assert late == [], late
    # Each transition of each rollout happened once: a stale write that landed would repeat one.
    transitions = Counter((e.subject, e.payload.get("from"), e.payload.get("to"), e.payload.get("stage"))
                          for e in chaos.events if e.kind == "rollout.transition")
    assert [t for t, n in transitions.items() if n > 1] == []
    # The epoch each rollout's writes were fenced with is its lease's.
    assert {r: e for r, e in chaos.epochs.items() if e[0] != e[1]} == {}


def test_every_rollback_steps_effect_happened_exactly_once(chaos):
    rolled_back = [r for r, (_, status, _) in chaos.finals.items() if status is Status.ROLLED_BACK]
    assert rolled_back
    done = Counter((e.subject, e.payload["position"]) for e in chaos.events if e.kind == "rollback.step.done")
    for rollout in rolled_back:
        environment = chaos.finals[rollout][0]
        plan = chaos.plans.get(rollout, [])
        assert plan, f"rollout {rollout} rolled back with no stored plan"
        assert [s.state for s in plan] == ["done"] * len(plan), plan
        assert all(done[(f"rollout:{rollout}", s.position)] == 1 for s in plan), plan
        ours = [r for r in chaos.requests[environment] if r["agent"].startswith(CONTROLLER_AGENT)
                and r["account"] == ACCOUNT and r["method"] != "GET"]
        for step, following in itertools.pairwise([*plan, None]):
            began = step.started_at
            ended = following.started_at if following is not None and following.started_at else step.finished_at
            during = [r for r in ours if began.timestamp() <= r["time"] <= ended.timestamp()]
            where = f"rollout {rollout} step {step.name} (attempts {step.attempts})"
            detail = json.loads(step.detail)
            if step.name == "cancel_orders":
                cancels = Counter(r["params"].get("symbol") for r in during if r["path"] == "/fapi/v1/allOpenOrders")
                assert set(cancels) == set(detail["symbols"]), (where, cancels)
                assert all(1 <= n <= step.attempts for n in cancels.values()), (where, cancels)
            elif step.name == "restore_leverage":
                wanted = {s: int(lev) for s, (lev, _) in detail["settings"].items()}
                sets = Counter((r["params"]["symbol"], int(r["params"]["leverage"]))
                               for r in during if r["path"] == "/fapi/v1/leverage")
                assert set(sets) == set(wanted.items()), (where, sets)
                assert all(1 <= n <= step.attempts for n in sets.values()), (where, sets)
            elif step.name == "positions":
                closes = Counter(r["params"].get("symbol") for r in during
                                 if r["path"] == "/fapi/v1/order" and r["status"] == 200)
                assert all(n <= 1 for n in closes.values()), (where, closes)


def test_no_two_bots_traded_one_account_at_once_beyond_a_lease(chaos):
    overlaps = []
    for environment, requests in chaos.requests.items():
        spans: dict[str, list[float]] = defaultdict(list)
        for request in requests:
            client_id = request["params"].get("newClientOrderId", "")
            if request["path"] == "/fapi/v1/order" and request["method"] == "POST" and client_id.startswith("bot-"):
                spans[client_id.split("-")[1]].append(request["time"])
        bots = sorted((min(times), max(times), run) for run, times in spans.items())
        for (first, last, run), (next_first, _, next_run) in itertools.combinations(bots, 2):
            if last - next_first > chaos.lease:
                overlaps.append((environment, run, next_run, round(last - next_first, 1)))
    assert overlaps == []


def test_the_audit_chain_verifies(chaos):
    assert chaos.verified


def _when(event: dict) -> float:
    return datetime.fromisoformat(event["timestamp"]).timestamp()
