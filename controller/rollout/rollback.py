"""Rollback: a persisted plan of idempotent steps that puts every account back as it was.

For each account the rollout placed its release on (newest first). Placement writes the account's
deployment row before it changes anything (`placing.place`), so an account whose placement failed
half-way is in the plan too; the row holds the settings the account had before (its snapshot).

    stop_release      stop the release (the deployer's stop is idempotent); by default it is
                      killed at once: a release being rolled back gets no graceful minute to
                      trade in, and what a graceful stop would tidy (orders, positions) the next
                      steps do from the exchange's side. Any bot of the account that the
                      deployer's records do not name (a stray) is killed too
    cancel_orders     cancel every open order of the account, symbols concurrently, on every
                      symbol either release or the snapshot names
    positions         keep them, or flatten with reduce-only market orders whose client ids are
                      fixed by the plan (an order the exchange already saw is never sent again).
                      With no previous release they are flattened whatever the stage says: no
                      bot is left to manage them
    restore_leverage  set each symbol's leverage and margin type back, concurrently, and read them
                      back: the snapshot taken at placement for the union of symbols (a symbol the
                      new release added goes back to what the account had), with the previous
                      release's config for the symbols it trades. The position and multi-assets
                      modes are checked against the snapshot (the controller cannot set them: one
                      that changed fails the step, naming it). With positions kept, the
                      exchange refuses a margin type change on a symbol with a position (-4048):
                      the leverage is still restored, and the margin type left as it is is said
                      in the step's result and in a ``rollback.margin_type_kept`` audit event
    start_previous    start the previous release with its snapshot (idempotent: a release that
                      already runs with that config is not started again), without applying its
                      settings again: restore_leverage did, and read them back. With no previous
                      release the account is left empty, said in the step's result and in a
                      ``rollback.account_left_empty`` audit event
    verify_previous   the previous release is up and the exchange's leverage (and margin type,
                      unless positions are kept) matches what was restored; with no previous
                      release, no bot runs and no order or position is left on the account

The plan is written in one transaction with the intent; each step's row is updated before it
runs (``running``, attempts + 1) and after (``done`` with what it did, or ``failed`` with the
error). A daemon killed anywhere resumes at the first step not ``done``. Each attempt of a step
is bounded by ``step_timeout`` seconds (every call inside it, to the exchange, systemctl or a
process, has its own bound too), so a hung call is an error, never a rollback that waits forever.
A step that still fails after bounded retries stops the plan; the rollout goes to ``failed`` naming the step, and
an operator's ``rollback`` resumes it there.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from controller import failpoints
from controller.canonical import canonical_json
from controller.exchange.errors import Rejected
from controller.logs import get_logger
from controller.rollout import placing
from controller.rollout.info import RolloutInfo
from controller.rollout.site import Site
from controller.store import audit
from controller.store.database import Database
from controller.store.deployments import get_deployment, rollout_deployments
from controller.store.models import RollbackStep

log = get_logger(__name__)

STEPS = ("stop_release", "cancel_orders", "positions", "restore_leverage", "start_previous", "verify_previous")
SAFE_AFTER = "restore_leverage"
"""The account is safe once this step is done: release stopped, orders canceled, leverage restored."""
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
    pass


class StepTimeout(Exception):
    """An attempt of a step did not end within the rollback's ``step_timeout``."""


async def load_plan(db: Database, rollout_id: int) -> list[StepInfo]:
    async with db.read() as session:
        rows = (await session.execute(select(RollbackStep).where(RollbackStep.rollout_id == rollout_id)
                                      .order_by(RollbackStep.position))).scalars()
        return [StepInfo.from_row(r) for r in rows]


class Rollback:
    def __init__(self, db: Database, site: Site, *, attempts: int = 3, backoff: float = 0.5,
                 stop_grace: float = 0.0, step_timeout: float = 120.0) -> None:
        self.db = db
        self.site = site
        self.clock = site.clock
        self.attempts = attempts
        self.backoff = backoff
        self.stop_grace = stop_grace
        self.step_timeout = step_timeout
        """Real seconds one attempt of a step may take: longer than a bot's start-up (30 s by default)."""
        self.safe_wall: float | None = None  # time.monotonic() when the account became safe

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
        async with self.db.write() as session:
            for position, (name, detail) in enumerate(steps):
                session.add(RollbackStep(rollout_id=info.id, position=position, name=name, state="pending",
                                         attempts=0, detail=canonical_json(detail)))
            await audit.append(session, self.clock, actor="controller", kind="rollback.planned",
                               subject=f"rollout:{info.id}", release=info.release,
                               payload={"trigger": trigger, "reason": reason, "policy": policy,
                                        "steps": [f"{n} {d['account']}" for n, d in steps]})
        return await load_plan(self.db, info.id)

    async def _account_steps(self, info: RolloutInfo, deployment) -> list[tuple[str, dict[str, Any]]]:
        previous = await get_deployment(self.db, deployment.previous_id) if deployment.previous_id else None
        previous_release = previous.release if previous else info.baseline
        failing = (await placing.release_config(self.db, deployment.release))[2]
        restored = (await placing.release_config(self.db, previous_release))[2] if previous_release else None
        before = deployment.settings_before or {}
        # What the account had before the placement, for every symbol either config names; the
        # release started again gets its own config's settings for its symbols (the same values
        # when it ran on this account before; its bot needs them when it comes from the baseline).
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
        return [
            ("stop_release", {**where, "deployment": deployment.id, "release": deployment.release}),
            ("cancel_orders", {**where, "symbols": symbols}),
            ("positions", {**where, "symbols": symbols, "mode": positions,
                           "client_id_prefix": f"rb{info.id}d{deployment.id}"}),
            ("restore_leverage", {**where, "settings": settings, "positions": positions,
                                  **({"modes": modes} if modes else {})}),
            ("start_previous", {**where, "release": previous_release,
                                "previous": previous.id if previous else None}),
            ("verify_previous", {**where, "release": previous_release, "settings": settings, "positions": positions,
                                 "symbols": symbols}),
        ]

    # ------------------------------------------------------------ running it

    async def run(self, info: RolloutInfo, *, stopping: Callable[[], bool] = lambda: False) -> RollbackOutcome | None:
        """Run every step not done yet, in order; failed steps are tried again (an operator's retry).

        Returns None when ``stopping()`` turned true between two steps: the daemon is shutting
        down, and the next one resumes the plan at the step that is next.
        """
        safe_at = None
        for step in await load_plan(self.db, info.id):
            if step.state != "done" and stopping():
                return None
            if step.state == "done":
                if step.name == SAFE_AFTER:
                    safe_at = safe_at or self.clock.time()
                continue
            try:
                await self._run_step(info, step)
            except RollbackFailed as exc:
                return RollbackOutcome(False, step.name, str(exc), safe_at)
            if step.name == SAFE_AFTER:
                safe_at = self.clock.time()
                self.safe_wall = time.monotonic()
        return RollbackOutcome(True, safe_at=safe_at, done_at=self.clock.time())

    async def _run_step(self, info: RolloutInfo, step: StepInfo) -> None:
        action = getattr(self, f"_{step.name}")
        failpoints.hit(f"rollback.{step.name}.before")
        error = None
        for attempt in range(1, self.attempts + 1):
            await self._mark(info, step, "running", attempt=True)
            began = time.monotonic()
            try:
                try:
                    async with asyncio.timeout(self.step_timeout):
                        done = await action(info, step.detail)
                except TimeoutError:
                    raise StepTimeout(f"did not end within {self.step_timeout:g} s") from None
                result = {**done, "wall_ms": round((time.monotonic() - began) * 1000, 1)}
            except Exception as exc:  # noqa: BLE001 - any failure is retried, then reported with the step
                error = f"{type(exc).__name__}: {exc}"
                log.warning("rollback_step_failed", rollout=info.id, step=step.name, account=step.detail.get("account"),
                            attempt=attempt, error=error)
                if attempt < self.attempts:
                    await self.clock.sleep(self.backoff * 2 ** (attempt - 1))
                continue
            await self._mark(info, step, "done", result=result)
            failpoints.hit(f"rollback.{step.name}.after")
            return
        await self._mark(info, step, "failed", error=error)
        raise RollbackFailed(f"{step.name} on {step.detail.get('account')}: {error}")

    async def _mark(self, info: RolloutInfo, step: StepInfo, state: str, *, attempt: bool = False,
                    result: dict | None = None, error: str | None = None) -> None:
        async with self.db.write() as session:
            row = (await session.execute(select(RollbackStep).where(
                RollbackStep.rollout_id == info.id, RollbackStep.position == step.position))).scalar_one()
            row.state = state
            if attempt:
                row.attempts += 1
                row.started_at = row.started_at or self.clock.now()
            if state in ("done", "failed"):
                row.finished_at = self.clock.now()
                row.error = error
                await audit.append(session, self.clock, actor="controller", kind=f"rollback.step.{state}",
                                   subject=f"rollout:{info.id}", release=info.release,
                                   payload={"position": step.position, "step": step.name,
                                            "account": step.detail.get("account"), "attempts": row.attempts,
                                            "result": result, "error": error})
            if result is not None:
                row.detail = canonical_json({**step.detail, "result": result})

    # ------------------------------------------------------------ the steps (each idempotent)

    async def _client(self, detail):
        return await self.site.client(detail["environment"], detail["account"], purpose="act")

    async def _stop_release(self, info: RolloutInfo, detail: dict) -> dict:
        deployment = await get_deployment(self.db, detail["deployment"])
        stopped = await placing.unplace(self.db, self.site, deployment, reason=f"rollback of rollout {info.id}",
                                        grace=self.stop_grace)
        strays = await self.site.deployer(detail["environment"]).kill_strays(
            self.site.instance(detail["environment"], detail["account"]))
        return {"stopped_pid": stopped.pid if stopped else None, **({"strays_killed": strays} if strays else {})}

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
        placed = await _gather(client.flatten(s, client_order_id=f"{detail['client_id_prefix']}{s}"[:36])
                               for s in detail["symbols"])
        return {"flattened": [s for s, order in zip(detail["symbols"], placed, strict=True) if order]}

    async def _restore_leverage(self, info: RolloutInfo, detail: dict) -> dict:
        client = await self._client(detail)
        # Plans written before the step knew the stage's positions mode are held to the strict rule.
        positions_kept = detail.get("positions", "flatten") == "keep"
        kept: dict[str, str] = {}

        async def one(symbol: str, leverage: int, margin_type: str) -> None:
            try:
                await client.set_margin_type(symbol, margin_type)
            except Rejected as exc:
                if exc.code != MARGIN_TYPE_WITH_POSITION or not positions_kept:
                    raise  # flattened positions leave nothing to block the change: a real failure
                kept[symbol] = margin_type
            await client.set_leverage(symbol, leverage)
            await client.confirm_leverage(symbol, leverage)

        await _gather(one(s, lev, mt) for s, (lev, mt) in sorted(detail["settings"].items()))
        result: dict[str, Any] = {"restored": sorted(detail["settings"])}
        if detail.get("modes"):
            result["modes"] = await self._check_modes(client, detail["modes"])
        if kept:
            found = {s.symbol: s.margin_type for s in await client.symbol_settings()}
            left = {s: {"is": found.get(s), "previous": kept[s]} for s in sorted(kept)}
            result["margin_type_kept"] = left
            result["message"] = ("leverage restored; margin type not restored while positions are open "
                                 "(positions: keep): " + ", ".join(f"{s} is {v['is']}, the previous config "
                                                                   f"says {v['previous']}" for s, v in left.items()))
            log.warning("rollback_margin_type_kept", rollout=info.id, account=detail["account"], symbols=sorted(kept))
            async with self.db.write() as session:
                await audit.append(session, self.clock, actor="controller", kind="rollback.margin_type_kept",
                                   subject=f"rollout:{info.id}", release=info.release,
                                   payload={"environment": detail["environment"], "account": detail["account"],
                                            "symbols": left, "reason": "positions open (-4048) and kept"})
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

    async def _start_previous(self, info: RolloutInfo, detail: dict) -> dict:
        if not detail["release"]:
            note = "no previous release: the account is left empty"
            log.warning("rollback_account_left_empty", rollout=info.id, account=detail["account"])
            async with self.db.write() as session:
                await audit.append(session, self.clock, actor="controller", kind="rollback.account_left_empty",
                                   subject=f"rollout:{info.id}", release=info.release,
                                   payload={"environment": detail["environment"], "account": detail["account"],
                                            "message": f"{note}: no bot runs, orders canceled, positions "
                                                       "flattened, settings as they were before the placement"})
            return {"started": None, "note": note}
        _, running = await placing.place(self.db, self.site, environment=detail["environment"],
                                         account=detail["account"], release=detail["release"], rollout_id=None,
                                         previous_id=detail["previous"], settings_restored=True)
        return {"started": detail["release"], "pid": running.pid}

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


async def _gather(awaitables) -> list:
    return list(await asyncio.gather(*awaitables))

