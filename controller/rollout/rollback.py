"""Rollback: a persisted plan of idempotent steps that puts every account back as it was.

For each account the rollout placed its release on (newest first). Placement writes the account's
deployment row before it changes anything (`placing.place`), so an account whose placement failed
half-way is in the plan too; the row holds the settings the account had before (its snapshot).

    stop_release      stop the release (the deployer's stop is idempotent); by default it is
                      killed at once: a release being rolled back gets no graceful minute to
                      trade in, and what a graceful stop would tidy (orders, positions) the next
                      steps do from the exchange's side. Any bot of the account that the
                      deployer's records do not name (a stray) is killed too. A release whose
                      feature toggle (endpoint form) a stage turned on is first POSTed
                      ``{"enabled": false}``, audited; no yes is logged and does not stop the step
    cancel_orders     cancel every open order of the account, symbols concurrently, on every
                      symbol either release or the snapshot names
    positions         keep them, or flatten with closing market orders whose client ids are
                      fixed by the plan (an order the exchange already saw is never sent again):
                      reduce-only in one-way mode, one per side naming it in hedge mode.
                      With no previous release they are flattened whatever the stage says: no
                      bot is left to manage them
    restore_leverage  set each symbol's leverage and margin type back, every symbol and both
                      settings at once (the modes read meanwhile), and read the leverage back
                      (every symbol's in one read):
                      the snapshot taken at placement for the union of symbols (a symbol the
                      new release added goes back to what the account had), with the previous
                      release's config for the symbols it trades. The position and multi-assets
                      modes are checked against the snapshot (the controller cannot set them: one
                      that changed fails the step, naming it). With positions kept, the
                      exchange refuses a margin type change on a symbol with a position (-4048):
                      the leverage is still restored, and the margin type left as it is is said
                      in the step's result and in a ``rollback.margin_type_kept`` audit event
    return_capital    only on an account a stage's capital ramp funded: give it back the capital it had
                      before the ramp, moving the difference with the master (it reads the exchange's
                      record first, so it is idempotent; `controller.rollout.capital`). The first step
                      of phase 2: the account is safe, and the previous release starts with its capital
    start_previous    start the previous release with the exact snapshot its deployment ran (the
                      deployment's config_sha256, so a toggle it had on is on again; a snapshot
                      not in the store fails the step, the release is never started with its
                      registered config instead; a baseline never placed starts with its own).
                      Idempotent: a release that already runs with that config is not started
                      again. Its settings are not applied again: restore_leverage did, and read
                      them back. With no previous
                      release the account is left empty, said in the step's result and in a
                      ``rollback.account_left_empty`` audit event
    verify_previous   the previous release is up and the exchange's leverage (and margin type,
                      unless positions are kept) matches what was restored; with no previous
                      release, no bot runs and no order or position is left on the account

The plan runs in two phases. Phase 1, *make safe* (the first four steps), runs on every account
at once, each account's steps in order; the rollback is safe (``safe_at``) when every account has
passed it. Phase 2, *restore service* (the last two), then runs on every account whose phase 1
passed, again all at once. A step that fails stops only its own account: the others go on, and
the outcome names every account and step that failed. An account whose phase 1 failed is not
restored (its previous release is not started on an account that is not safe).

The plan is written in one transaction with the intent; each step's row is updated before it
runs (``running``, attempts + 1) and after (``done`` with what it did, or ``failed`` with the
error), in order (the store's write lock orders the accounts' writes, and their audit events stay
one chain). In phase 1 these writes are queued, not waited for: a task writes them behind the
steps (a step's marks that waited together share a transaction), so the account is made safe at
the exchange's pace, not the store's; phase 2 starts once they have been tried (while the store
is away they wait on, as every write of the rollback does). A daemon killed anywhere resumes
each account at its first step not ``done``: a step of phase 1 whose marks the store had not
taken yet runs again, and every step is idempotent.

Each attempt of a step is bounded by ``step_timeout`` seconds (every call inside it, to the
exchange, systemctl or a process, has its own bound too), so a hung call is an error, never a
rollback that waits forever. A rate limit (the exchange's 429/418, or the controller's own
weight budget) is not a failure: the step waits the time the limit names and tries again
without spending an attempt (a ``rollback.step.rate_limited`` audit event says so). The whole
rollback has a ``deadline`` (clock seconds from its start or resume): past it, a step still
failing or waiting is ``failed``, saying the deadline passed. A step that still fails after
bounded retries is ``failed``; the rollout goes to ``failed`` naming it, and an operator's
``rollback`` resumes every account there.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from controller import failpoints
from controller.canonical import canonical_json
from controller.clock import SimulatedClock
from controller.config.daemon import RollbackConfig
from controller.errors import StoreError
from controller.exchange.errors import BudgetExhausted, NotApplied, Rejected, RateLimited
from controller.logs import get_logger
from controller.rollout import capital, placing, toggle_endpoint
from controller.rollout.info import RolloutInfo
from controller.rollout.site import Site
from controller.store import audit
from controller.store.database import Database
from controller.store.deployments import get_deployment, mark_stopped, rollout_deployments
from controller.store.leases import FencingRefused
from controller.store.models import RollbackStep

log = get_logger(__name__)

STEPS = ("stop_release", "cancel_orders", "positions", "restore_leverage", "start_previous", "verify_previous")
RETURN_CAPITAL = "return_capital"
"""The step a plan has, first in phase 2, for each account a capital ramp funded (not in `STEPS`: only then)."""
RESTORE_SERVICE = (RETURN_CAPITAL, "start_previous", "verify_previous")
"""Phase 2's steps; every other step makes the account safe (phase 1): release stopped, orders
canceled, positions handled, leverage restored."""
MIN_RATE_LIMIT_WAIT = 1.0
STORE_RETRY = 1.0
"""Clock seconds between two tries of the store while it cannot be written."""
"""Clock seconds a rate-limited step waits at least, whatever Retry-After says."""
_DEFAULTS = RollbackConfig()
MARGIN_TYPE_WITH_POSITION = -4048
"""Binance refuses a margin type change on a symbol with a position open."""


@dataclass(frozen=True)
class StepInfo:
    position: int
    name: str
    state: str
    attempts: int
    detail: dict[str, Any]
    error: str | None

    @classmethod
    def from_row(cls, row: RollbackStep) -> StepInfo:
        return cls(row.position, row.name, row.state, row.attempts, json.loads(row.detail), row.error)


@dataclass(frozen=True)
class RollbackOutcome:
    ok: bool
    failed_step: str | None = None
    error: str | None = None
    safe_at: float | None = None  # Clock time the account became safe
    done_at: float | None = None


class RollbackFailed(Exception):
    """A step failed for good: its attempts spent, or the rollback's deadline passed."""

    def __init__(self, step: StepInfo, error: str | None) -> None:
        super().__init__(f"{step.name} on {step.detail.get('environment')}/{step.detail.get('account')}: {error}")
        self.step = step.name
        self.position = step.position


class _Interrupted(Exception):
    """A rate-limit wait was cut short: the daemon shuts down."""


class StepTimeout(Exception):
    """An attempt of a step did not end within the rollback's ``step_timeout``."""


async def load_plan(db: Database, rollout_id: int) -> list[StepInfo]:
    async with db.read() as session:
        rows = (await session.execute(select(RollbackStep).where(RollbackStep.rollout_id == rollout_id)
                                      .order_by(RollbackStep.position))).scalars()
        return [StepInfo.from_row(r) for r in rows]


class Rollback:
    def __init__(self, db: Database, site: Site, *, attempts: int = _DEFAULTS.attempts,
                 backoff: float = _DEFAULTS.backoff, stop_grace: float = 0.0,
                 step_timeout: float = _DEFAULTS.step_timeout, deadline: float = _DEFAULTS.deadline) -> None:
        """The settings are the daemon config's ``rollback:`` ones (`RollbackConfig`)."""
        self.db = db
        self.site = site
        self.clock = site.clock
        self.attempts = attempts
        self.backoff = backoff
        self.stop_grace = stop_grace
        self.step_timeout = step_timeout
        """Real seconds one attempt of a step may take: longer than a bot's start-up (30 s by default)."""
        self.deadline = deadline
        """Clock seconds from the start (or resume) of `run` after which a step is ``failed``."""
        self.safe_wall: float | None = None  # time.monotonic() when every account became safe
        self._deferred: list[_Write] = []  # writes waiting for the store (or for their turn), in order
        self._writing = asyncio.Lock()
        self._writer: asyncio.Task | None = None  # writes the queued writes while phase 1 goes on
        self._write_failure: Exception | None = None  # what stopped the writer, other than the store being away
        self.store_error: str | None = None
        """Why the store cannot be written now (None: it can); the rollback goes on meanwhile."""

    # ------------------------------------------------------------ the plan

    async def plan(self, info: RolloutInfo, *, trigger: str, reason: str, policy: str | None = None) -> list[StepInfo]:
        """Write the plan with the intent (once: a plan already written is returned as it is)."""
        existing = await load_plan(self.db, info.id)
        if existing:
            return existing
        steps: list[tuple[str, dict[str, Any]]] = []
        for deployment in reversed(await rollout_deployments(self.db, info.id)):
            if deployment.stopped_at is not None and deployment.previous_id is None and not info.baseline:
                continue
            steps.extend(await self._account_steps(info, deployment))
        # A ramp may move money before its release is placed: an account funded and never placed (the
        # placement failed, or the step itself) is given its capital back all the same.
        planned = {f"{d['environment']}/{d['account']}" for _, d in steps}
        for where, base in (await self._ramp_bases(info)).items():
            if where not in planned:
                environment, _, account = where.partition("/")
                steps.append((RETURN_CAPITAL, {"environment": environment, "account": account, "base": base}))
        async with self.db.write(durable=True) as session:
            for position, (name, detail) in enumerate(steps):
                session.add(RollbackStep(rollout_id=info.id, position=position, name=name, state="pending",
                                         attempts=0, detail=canonical_json(detail)))
            await audit.append(session, self.clock, actor="controller", kind="rollback.planned",
                               subject=f"rollout:{info.id}", release=info.release,
                               payload={"trigger": trigger, "reason": reason, "policy": policy,
                                        "steps": [f"{n} {d['account']}" for n, d in steps]})
        failpoints.hit("rollback.planned.after")  # the plan written, no step begun
        return await load_plan(self.db, info.id)

    async def _ramp_bases(self, info: RolloutInfo) -> dict[str, dict[str, Any]]:
        """Where each of the rollout's ramps started, by ``environment/account``: as the decision state
        has it, else as recorded before the first transfer (a step that moved money, then failed or
        lost its daemon, was never reported funded)."""
        recorded = {k: b.to_json() for k, b in (await capital.recorded_bases(self.db, info.id)).items()}
        return {**recorded, **{k: dict(v) for k, v in info.state.ramp_base.items()}}

    async def _account_steps(self, info: RolloutInfo, deployment) -> list[tuple[str, dict[str, Any]]]:
        previous = await get_deployment(self.db, deployment.previous_id) if deployment.previous_id else None
        previous_release = previous.release if previous else info.baseline
        failing_info, _, failing = await placing.release_config(self.db, deployment.release)
        declared = placing.declared_toggle(failing_info)
        # The endpoint form of a toggle a stage on this account turned on is turned off before the stop.
        toggled = declared is not None and declared.endpoint is not None and any(
            s.toggle for s in info.pipeline.stages if (s.environment, s.account) == (deployment.environment,
                                                                                    deployment.account))
        # The previous release starts again with the snapshot its deployment ran (a toggle it had
        # on stays on), not its registered config; a baseline never placed has only the latter.
        snapshot = previous.config_sha256 if previous else None
        restored = None
        if snapshot is not None:
            with contextlib.suppress(placing.SnapshotMissing):  # start_previous fails on it; the plan is still made
                restored = (await placing.snapshot_config(self.db, previous_release, snapshot))[2]
        elif previous_release:
            restored = (await placing.release_config(self.db, previous_release))[2]
        before = deployment.settings_before or {}
        # What the account had before the placement, for every symbol either config names; the
        # release started again gets its config's settings for its symbols (the same values when
        # it ran on this account before; its bot needs them when it comes from the baseline).
        settings = {s: list(v) for s, v in before.get("symbols", {}).items()}
        if restored:
            settings.update({s: [c.leverage, c.margin_type] for s, c in restored.symbols.items()})
        symbols = sorted(set(failing.symbols) | set(restored.symbols if restored else ()) | set(settings))
        stage = next((s for s in info.pipeline.stages if s.account == deployment.account
                      and s.environment == deployment.environment), None)
        # With no release to start again, no bot is left to manage positions: they are flattened.
        positions = (stage.positions if stage else "keep") if previous_release else "flatten"
        modes = {k: before[k] for k in ("position_mode", "multi_assets") if k in before}
        where = {"environment": deployment.environment, "account": deployment.account}
        base = (await self._ramp_bases(info)).get(f"{deployment.environment}/{deployment.account}")
        # An account placed twice by the rollout gets the step twice: the second finds nothing to move.
        returned = [(RETURN_CAPITAL, {**where, "base": dict(base)})] if base else []
        return [
            ("stop_release", {**where, "deployment": deployment.id, "release": deployment.release,
                              **({"toggle_endpoint": declared.endpoint} if toggled else {})}),
            ("cancel_orders", {**where, "symbols": symbols}),
            ("positions", {**where, "symbols": symbols, "mode": positions,
                           "client_id_prefix": f"rb{info.id}d{deployment.id}"}),
            ("restore_leverage", {**where, "settings": settings, "positions": positions,
                                  **({"modes": modes} if modes else {})}),
            *returned,
            ("start_previous", {**where, "release": previous_release,
                                "previous": previous.id if previous else None, "config_sha256": snapshot}),
            ("verify_previous", {**where, "release": previous_release, "settings": settings, "positions": positions,
                                 "symbols": symbols}),
        ]

    # ------------------------------------------------------------ running it

    async def run(self, info: RolloutInfo, *, stopping: Callable[[], bool] = lambda: False) -> RollbackOutcome | None:
        """Run every step not done yet, in two phases; failed steps are tried again (an operator's retry).

        Phase 1 makes every account safe, all accounts at once; phase 2 then restores service on
        each account whose phase 1 passed, all at once too. Returns None when ``stopping()``
        turned true between two steps: the daemon is shutting down, and the next one resumes the
        plan at the steps that are next.
        """
        accounts = _accounts(await load_plan(self.db, info.id))
        deadline = self.clock.time() + self.deadline
        already_safe = all(s.state == "done" for account in accounts for s in account.make_safe)
        try:
            safe_runs = await self._run_accounts(info, [a.make_safe for a in accounts], deadline, stopping)
            safe_at = None
            if all(run.failure is None for run in safe_runs):
                safe_at = self.clock.time()
                if not already_safe:
                    self.safe_wall = time.monotonic()
                    log.info("rollback_safe", rollout=info.id, accounts=[a.name for a in accounts])
        finally:
            await self._settle()  # phase 1's marks, queued, are tried before anything else
        if any(run.interrupted for run in safe_runs):
            return None
        # An account whose phase 1 failed is not safe: its previous release is not started there.
        safe = [a for a, run in zip(accounts, safe_runs, strict=True) if run.failure is None]
        restore_runs = await self._run_accounts(info, [a.restore_service for a in safe], deadline, stopping)
        if any(run.interrupted for run in restore_runs):
            return None
        await self._written(deadline, stopping)  # the steps are in the store before the outcome is
        failures = sorted((run.failure for run in (*safe_runs, *restore_runs) if run.failure is not None),
                          key=lambda failure: failure.position)
        if failures:
            return RollbackOutcome(False, failures[0].step, "; ".join(str(f) for f in failures), safe_at)
        return RollbackOutcome(True, safe_at=safe_at, done_at=self.clock.time())

    async def _run_accounts(self, info: RolloutInfo, work: list[list[StepInfo]], deadline: float,
                            stopping: Callable[[], bool]) -> list[_Run]:
        """Each account's steps in order, the accounts concurrently: one account's failure stops
        only that account."""
        async def one(steps: list[StepInfo]) -> _Run:
            for step in steps:
                if step.state == "done":
                    continue
                if stopping():
                    return _Run(interrupted=True)
                try:
                    await self._run_step(info, step, deadline=deadline, stopping=stopping)
                except RollbackFailed as failure:
                    return _Run(failure=failure)
                except _Interrupted:
                    return _Run(interrupted=True)
            return _Run()

        # Every account finishes what it can even if another's store write raised; then that error is raised.
        results = await asyncio.gather(*(one(steps) for steps in work), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return results

    async def _run_step(self, info: RolloutInfo, step: StepInfo, *, deadline: float,
                        stopping: Callable[[], bool] = lambda: False) -> None:
        """Try the step up to ``attempts`` times; a rate limit (the exchange's, or the controller's
        weight budget) makes it wait the time it names and try again without spending an attempt.
        The deadline is checked before each try and cuts each wait short; a try under way is
        bounded by ``step_timeout``. A shutdown (``stopping()``) cuts a rate-limit wait short too:
        the step stays ``running`` and the next start tries it again."""
        action = getattr(self, f"_{step.name}")
        # Making the account safe waits on the exchange only: the step's marks are queued. Restoring
        # service starts from a store that holds every mark before it (a placement reads it).
        queued = step.name not in RESTORE_SERVICE
        if not queued:
            await self._settle()
        failpoints.hit(f"rollback.{step.name}.before")
        error = None
        attempt = 0
        counted = True  # the next try spends an attempt (a try after a rate-limit wait does not)
        while attempt < self.attempts or not counted:
            if self.clock.time() >= deadline:
                error = self._deadline_passed(error)
                break
            if counted:
                attempt += 1
                await self._mark(info, step, "running", attempt=True, queued=queued)
            began = time.monotonic()
            try:
                try:
                    async with asyncio.timeout(self.step_timeout):
                        done = await action(info, step.detail)
                except TimeoutError:
                    raise StepTimeout(f"did not end within {self.step_timeout:g} s") from None
                result = {**done, "wall_ms": round((time.monotonic() - began) * 1000, 1)}
            except FencingRefused:
                raise  # another daemon owns the rollout now: no retry, no mark
            except Exception as exc:  # noqa: BLE001 - any failure is retried, then reported with the step
                error = f"{type(exc).__name__}: {exc}"
                if _store_error(exc):
                    # Only a placement needs the store inside a step (its intent first): it waits for
                    # the store, under the deadline, without spending an attempt.
                    counted = False
                    log.warning("rollback_step_waits_for_store", rollout=info.id, step=step.name,
                                account=step.detail.get("account"), error=error)
                    if not await self._wait(min(STORE_RETRY, max(0.0, deadline - self.clock.time())), stopping):
                        raise _Interrupted from None
                    continue
                retry_after = _retry_after(exc)
                if retry_after is not None:
                    counted = False
                    wait = min(max(retry_after, MIN_RATE_LIMIT_WAIT), max(0.0, deadline - self.clock.time()))
                    await self._rate_limited(info, step, error, wait, attempt)
                    if not await self._wait(wait, stopping):
                        raise _Interrupted from None
                    continue
                counted = True
                log.warning("rollback_step_failed", rollout=info.id, step=step.name, account=step.detail.get("account"),
                            attempt=attempt, error=error)
                if attempt < self.attempts:
                    await self.clock.sleep(self.backoff * 2 ** (attempt - 1))
                continue
            # The failpoint once the done mark is committed, whenever the store takes it.
            await self._mark(info, step, "done", result=result, queued=queued,
                             then=lambda: failpoints.hit(f"rollback.{step.name}.after"))
            return
        await self._mark(info, step, "failed", error=error, queued=queued)
        raise RollbackFailed(step, error)

    async def _wait(self, seconds: float, stopping: Callable[[], bool]) -> bool:
        """Sleep ``seconds`` on the clock, a second at a time; False as soon as ``stopping()`` is true."""
        end = self.clock.time() + seconds
        while (left := end - self.clock.time()) > 0:
            if stopping():
                return False
            await self.clock.sleep(min(left, 1.0))
        return True

    def _deadline_passed(self, error: str | None) -> str:
        return (f"deadline passed: the rollback did not end within {self.deadline:g} s of its start"
                + (f" (last error: {error})" if error else ""))

    async def _rate_limited(self, info: RolloutInfo, step: StepInfo, error: str, wait: float, attempt: int) -> None:
        """Say that the step waits for a rate limit: in the log and the audit trail, where an
        operator reading a slow rollback finds why."""
        log.warning("rollback_step_rate_limited", rollout=info.id, step=step.name, account=step.detail.get("account"),
                    wait=round(wait, 1), error=error)
        await self._audit(info, "rollback.step.rate_limited", {
            "position": step.position, "step": step.name, "account": step.detail.get("account"), "attempts": attempt,
            "wait": round(wait, 1), "error": error})

    # ------------------------------------------------------------ the store, which may be away

    async def _write(self, write: Callable[[Any], Awaitable[None]], then: Callable[[], None] | None = None) -> None:
        """Run ``write(session)`` in a write transaction, after every write that waits. While the
        store cannot be written the write waits too, in order, and the rollback goes on: making
        the account safe needs the exchange and the deployer, not the store. Each write keeps the
        time it was made, so the rows and the audit trail say when things happened. ``then`` runs
        once the write is committed."""
        async with self._writing:
            self._deferred.append(_Write(write, then))
            await self._flush()

    def _queue(self, write: Callable[[Any], Awaitable[None]], then: Callable[[], None] | None = None) -> None:
        """Like `_write`, without waiting for it: a task writes the queue in order while the caller
        goes on (phase 1 makes the account safe without a store round trip between two steps)."""
        self._raise_write_failure()
        self._deferred.append(_Write(write, then))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_queued())

    async def _write_queued(self) -> None:
        try:
            async with self._writing:
                await self._flush()
        except Exception as exc:  # noqa: BLE001 - raised by the next `_queue` or `_settle`
            self._write_failure = exc

    async def _settle(self) -> None:
        """Wait until the queued writes have been tried (the store being away, they wait on, as
        `_write`'s do); raise what stopped them otherwise (a fenced write, say)."""
        if self._writer is not None:
            await self._writer
        self._raise_write_failure()

    def _raise_write_failure(self) -> None:
        """Raise, once, what stopped the writer; its write stays first in the queue, tried again
        by the next flush (as a write that raised in `_write` is)."""
        failure, self._write_failure = self._write_failure, None
        if failure is not None:
            raise failure

    async def _flush(self) -> bool:
        """Write what waits, oldest first; False (and the rest kept) at the first store error.

        The writes up to the first that has a ``then`` (a step's end) share a transaction: a
        step's ``running`` and ``done`` marks queued while the store was busy are one commit, and
        what ``then`` does (a failpoint) happens with the store holding nothing after it."""
        while self._deferred:
            batch = next((self._deferred[:n + 1] for n, w in enumerate(self._deferred) if w.then is not None),
                         list(self._deferred))
            try:
                async with self.db.write() as session:
                    for queued in batch:
                        await queued.write(session)
            except StoreError as exc:
                if self.store_error is None:
                    log.error("rollback_store_unreachable", waiting_writes=len(self._deferred), error=str(exc))
                self.store_error = str(exc)
                return False
            del self._deferred[:len(batch)]
            if batch[-1].then is not None:
                batch[-1].then()
        if self.store_error is not None:
            log.info("rollback_store_reachable_again")
            self.store_error = None
        return True

    async def _written(self, deadline: float, stopping: Callable[[], bool]) -> None:
        """Wait, retrying every second of the clock, until every waiting write is in the store; the
        rollout's outcome is only recorded after its steps. Past the deadline it raises StoreError
        (the runner then starts again, and the plan resumes: every step is idempotent)."""
        while True:
            async with self._writing:
                if await self._flush():
                    return
            if self.clock.time() >= deadline or stopping():
                raise StoreError(f"{len(self._deferred)} rollback write(s) still wait for the store: "
                                 f"{self.store_error}")
            await self.clock.sleep(STORE_RETRY)

    async def _mark(self, info: RolloutInfo, step: StepInfo, state: str, *, attempt: bool = False,
                    result: dict | None = None, error: str | None = None, queued: bool = False,
                    then: Callable[[], None] | None = None) -> None:
        """Update the step's row (and audit its end); ``queued``: without waiting for the store."""
        at = SimulatedClock(self.clock.now())  # the time of the mark, whenever the store takes it

        async def write(session) -> None:
            row = (await session.execute(select(RollbackStep).where(
                RollbackStep.rollout_id == info.id, RollbackStep.position == step.position))).scalar_one()
            row.state = state
            if attempt:
                row.attempts += 1
                row.started_at = row.started_at or at.now()
            if state in ("done", "failed"):
                row.finished_at = at.now()
                row.error = error
                await audit.append(session, at, actor="controller", kind=f"rollback.step.{state}",
                                   subject=f"rollout:{info.id}", release=info.release,
                                   payload={"position": step.position, "step": step.name,
                                            "account": step.detail.get("account"), "attempts": row.attempts,
                                            "result": result, "error": error})
            if result is not None:
                row.detail = canonical_json({**step.detail, "result": result})

        if queued:
            self._queue(write, then)
        else:
            await self._write(write, then)

    async def _audit(self, info: RolloutInfo, kind: str, payload: dict[str, Any]) -> None:
        """An audit event of the rollback, written in its turn with the steps' marks."""
        at = SimulatedClock(self.clock.now())

        async def write(session) -> None:
            await audit.append(session, at, actor="controller", kind=kind, subject=f"rollout:{info.id}",
                               release=info.release, payload=payload)

        await self._write(write)

    # ------------------------------------------------------------ the steps (each idempotent)

    async def _client(self, detail):
        return await self.site.client(detail["environment"], detail["account"], purpose="act")

    async def _stop_release(self, info: RolloutInfo, detail: dict) -> dict:
        # From the plan's own detail, not the store: the account is made safe even while the store is away.
        deployer = self.site.deployer(detail["environment"])
        instance = self.site.instance(detail["environment"], detail["account"])
        current = await deployer.status(instance)
        stopped = None
        toggled_off = None
        if current is not None and current.release == detail["release"] and detail.get("toggle_endpoint"):
            toggled_off = await self._toggle_off(info, detail, current)
        if current is None or current.release == detail["release"]:  # none here: another host's may run,
            stopped = await deployer.stop(instance, grace=self.stop_grace)  # and a stop fences it (supervised)
        at = SimulatedClock(self.clock.now())

        async def closed(session) -> None:
            await mark_stopped(session, at, detail["deployment"], reason=f"rollback of rollout {info.id}")

        self._queue(closed)  # a step of phase 1: written in its turn, the strays killed meanwhile
        strays = await self.site.deployer(detail["environment"]).kill_strays(
            self.site.instance(detail["environment"], detail["account"]))
        return {"stopped_pid": stopped.pid if stopped else None, **({"strays_killed": strays} if strays else {}),
                **({"toggle_off": toggled_off} if toggled_off else {})}

    async def _toggle_off(self, info: RolloutInfo, detail: dict, running) -> dict:
        """POST ``{"enabled": false}`` to the bot's toggle endpoint, audited; a bot that does not say yes
        is logged and does not hold the rollback back (it is stopped next)."""
        switched = await toggle_endpoint.switch(running, detail["toggle_endpoint"], False,
                                                timeout=toggle_endpoint.OFF_TIMEOUT)
        await self._audit(info, "toggle.switched", {**switched.to_json(), "deployment": detail["deployment"],
                                                    "environment": detail["environment"],
                                                    "account": detail["account"]})
        if not switched.ok:
            log.warning("rollback_toggle_off_failed", rollout=info.id, account=detail["account"],
                        detail=switched.detail)
        return {"ok": switched.ok, "detail": switched.detail}

    async def _cancel_orders(self, info: RolloutInfo, detail: dict) -> dict:
        client = await self._client(detail)
        symbols = detail["symbols"]  # one call per symbol (weight 1) rather than reading every symbol (40)
        await _gather(client.cancel_all_orders(s) for s in symbols)
        left = [o.client_order_id for orders in await _gather(client.open_orders(s) for s in symbols) for o in orders]
        if left:
            raise RuntimeError(f"orders still open after cancel: {', '.join(left[:5])}")
        return {"canceled_symbols": symbols}

    async def _positions(self, info: RolloutInfo, detail: dict) -> dict:
        if detail["mode"] == "keep":
            return {"kept": True}
        client = await self._client(detail)
        held = await client.positions()  # every symbol's in one read (weight 5), not one read each
        placed = await _gather(client.flatten(s, client_order_id=f"{detail['client_id_prefix']}{s}"[:36], held=held)
                               for s in detail["symbols"])
        return {"flattened": [s for s, orders in zip(detail["symbols"], placed, strict=True) if orders]}

    async def _restore_leverage(self, info: RolloutInfo, detail: dict) -> dict:
        client = await self._client(detail)
        # Plans written before the step knew the stage's positions mode are held to the strict rule.
        positions_kept = detail.get("positions", "flatten") == "keep"
        kept: dict[str, str] = {}

        async def margin(symbol: str, margin_type: str) -> None:
            try:
                await client.set_margin_type(symbol, margin_type)
            except Rejected as exc:
                if exc.code != MARGIN_TYPE_WITH_POSITION or not positions_kept:
                    raise  # flattened positions leave nothing to block the change: a real failure
                kept[symbol] = margin_type

        async def modes() -> dict[str, Any] | None:
            return await self._check_modes(client, detail["modes"]) if detail.get("modes") else None

        # A symbol's margin type and leverage are independent settings (neither change touches the
        # other): every symbol's both are asked at once, one round trip, with the modes read meanwhile.
        settings = sorted(detail["settings"].items())
        found_modes, _ = await _gather((modes(), _gather(
            change for s, (lev, mt) in settings for change in (margin(s, mt), client.set_leverage(s, lev)))))
        # Then the leverage is read back, every symbol in one read (a response can say "applied"
        # while the exchange's state did not change).
        read_back = {s.symbol: s for s in await client.symbol_settings()}
        applied = {symbol: found.leverage for symbol, found in read_back.items()}
        wrong = [f"{s}: the exchange applies leverage {applied.get(s)}, expected {lev}"
                 for s, (lev, _) in settings if applied.get(s) != lev]
        if wrong:
            raise NotApplied("; ".join(wrong))
        result: dict[str, Any] = {"restored": sorted(detail["settings"])}
        if found_modes is not None:
            result["modes"] = found_modes
        if kept:
            found = {symbol: held.margin_type for symbol, held in read_back.items()}
            left = {s: {"is": found.get(s), "previous": kept[s]} for s in sorted(kept)}
            result["margin_type_kept"] = left
            result["message"] = ("leverage restored; margin type not restored while positions are open "
                                 "(positions: keep): " + ", ".join(f"{s} is {v['is']}, the previous config "
                                                                   f"says {v['previous']}" for s, v in left.items()))
            log.warning("rollback_margin_type_kept", rollout=info.id, account=detail["account"], symbols=sorted(kept))
            await self._audit(info, "rollback.margin_type_kept", {
                "environment": detail["environment"], "account": detail["account"], "symbols": left,
                "reason": "positions open (-4048) and kept"})
        return result

    async def _check_modes(self, client, modes: dict[str, Any]) -> dict[str, Any]:
        """The position and multi-assets modes are as the snapshot says. The controller never
        changes them and cannot set them back: one that differs fails the step, naming it."""
        found = await client.account_modes()
        now = {"position_mode": "hedge" if found["dualSidePosition"] else "one-way",
               "multi_assets": found["multiAssetsMargin"]}
        wrong = {k: (now[k], v) for k, v in sorted(modes.items()) if now.get(k) != v}
        if wrong:
            raise RuntimeError("the account's modes changed since the placement and are not restored by the "
                               "controller: " + ", ".join(f"{k} is {a}, it was {b}" for k, (a, b) in wrong.items())
                               + "; set them back by hand")
        return now

    async def _return_capital(self, info: RolloutInfo, detail: dict) -> dict:
        return await capital.give_back(self.db, self.site, environment=detail["environment"],
                                       account=detail["account"], base=capital.Base.from_json(detail["base"]),
                                       rollout=info.id, release=info.release)

    async def _start_previous(self, info: RolloutInfo, detail: dict) -> dict:
        if not detail["release"]:
            note = "no previous release: the account is left empty"
            log.warning("rollback_account_left_empty", rollout=info.id, account=detail["account"])
            await self._audit(info, "rollback.account_left_empty", {
                "environment": detail["environment"], "account": detail["account"],
                "message": f"{note}: no bot runs, orders canceled, positions flattened, settings as they were "
                           "before the placement"})
            return {"started": None, "note": note}
        snapshot = detail.get("config_sha256")
        if "config_sha256" not in detail and detail["previous"] is not None:
            # A plan written before plans named the snapshot: the previous deployment's row does.
            snapshot = (await get_deployment(self.db, detail["previous"])).config_sha256
        _, running = await placing.place(self.db, self.site, environment=detail["environment"],
                                         account=detail["account"], release=detail["release"], rollout_id=None,
                                         previous_id=detail["previous"], settings_restored=True,
                                         config_sha256=snapshot)
        return {"started": detail["release"], "pid": running.pid, "config_sha256": running.config_sha256}

    async def _verify_previous(self, info: RolloutInfo, detail: dict) -> dict:
        client = await self._client(detail)
        applied = {s.symbol: (s.leverage, s.margin_type) for s in await client.symbol_settings()}
        # A margin type left as it was while positions are kept is said by restore_leverage already.
        margin_types = detail.get("positions", "keep") != "keep"
        wrong = {s: (applied.get(s), (lev, mt)) for s, (lev, mt) in detail["settings"].items()
                 if applied.get(s, (None, None))[0] != lev or (margin_types and applied[s][1] != mt)}
        if wrong:
            raise RuntimeError("settings differ from what the rollback restored: " +
                               ", ".join(f"{s} is {a}, expected {e}" for s, (a, e) in sorted(wrong.items())))
        running = await self.site.deployer(detail["environment"]).status(
            self.site.instance(detail["environment"], detail["account"]))
        if detail["release"]:
            if running is None or running.release != detail["release"]:
                raise RuntimeError(f"{detail['release']} is not running on {detail['account']}")
            return {"verified": True}
        # Left empty: no bot, and nothing of the account's left trading on the exchange.
        symbols = detail.get("symbols", [])
        held = [p.symbol for p in await client.positions() if p.amount != 0 and p.symbol in symbols]
        orders = [o.symbol for found in await _gather(client.open_orders(s) for s in symbols) for o in found]
        problems = ([f"{running.release} runs"] if running is not None else []) + \
                   ([f"positions open on {', '.join(sorted(set(held)))}"] if held else []) + \
                   ([f"orders open on {', '.join(sorted(set(orders)))}"] if orders else [])
        if problems:
            raise RuntimeError(f"{detail['account']} is not empty: {'; '.join(problems)}")
        return {"verified": True, "empty": True}


@dataclass(frozen=True)
class _Write:
    """A write of the rollback waiting for the store: ``write(session)``, then ``then()`` once committed."""

    write: Callable[[Any], Awaitable[None]]
    then: Callable[[], None] | None = None


@dataclass(frozen=True)
class _Run:
    """How one account's steps of a phase ended: all done, failed at a step, or interrupted
    between two steps (the daemon shuts down)."""

    failure: RollbackFailed | None = None
    interrupted: bool = False


@dataclass(frozen=True)
class _Account:
    """One account's steps of the plan, split into the two phases."""

    name: str  # environment/account
    make_safe: list[StepInfo]
    restore_service: list[StepInfo]


def _accounts(plan: list[StepInfo]) -> list[_Account]:
    """The plan's steps by account, in plan order. An account the plan undoes more than one
    deployment of (a rollout that placed it twice) keeps its steps in plan order, all in phase 1:
    restoring service between two undone deployments must happen in that order."""
    steps: dict[str, list[StepInfo]] = {}
    for step in plan:
        steps.setdefault(f"{step.detail.get('environment')}/{step.detail.get('account')}", []).append(step)
    accounts = []
    for name, own in steps.items():
        if sum(s.name == "stop_release" for s in own) > 1:
            accounts.append(_Account(name, own, []))
        else:
            accounts.append(_Account(name, [s for s in own if s.name not in RESTORE_SERVICE],
                                     [s for s in own if s.name in RESTORE_SERVICE]))
    return accounts


def _retry_after(exc: BaseException) -> float | None:
    """The seconds a rate limit asks to wait, when ``exc`` is one (or a group of only rate limits,
    or caused by one); None for any other failure."""
    if isinstance(exc, (RateLimited, BudgetExhausted)):
        return exc.retry_after
    if isinstance(exc, BaseExceptionGroup):
        waits = [_retry_after(e) for e in exc.exceptions]
        return None if None in waits else max(waits)
    return _retry_after(exc.__cause__) if exc.__cause__ is not None else None


def _store_error(exc: BaseException | None) -> bool:
    """The store could not be used (``exc``, or what caused it, or all of a group)."""
    if exc is None:
        return False
    if isinstance(exc, StoreError):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return all(_store_error(e) for e in exc.exceptions)
    return _store_error(exc.__cause__)


async def _gather(awaitables) -> list:
    return list(await asyncio.gather(*awaitables))

