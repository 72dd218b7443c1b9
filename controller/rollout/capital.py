"""A stage's capital ramp at the exchange: fund a step's share, and give the capital back on rollback.

What a sub-account holds of the firm's capital is measured as the stage's capital cap judges it: the
capital moved into it, not what it earned. The ramp's base is the account's wallet when its first step
is funded; the capital in it since is that base plus every transfer the exchange records for the
account since then (GET /fapi/v1/income, type TRANSFER), whoever made it. Each move reads that again
and transfers the difference, so a move done twice (a daemon killed between the transfer and the
record of it) moves nothing the second time. The base is audited (``capital.base_recorded``) before
the first transfer: a step that fails or a daemon that dies after moving money still leaves the
rollback what it needs to give the money back.

Funds move with the master's transfer key alone (``transfer_key``), its rights read before every move
(`controller.rollout.keys.check_transfer`), through Binance's sub-account futures internal transfer;
each move is audited ``capital.transferred`` with its amount, from, to and step. Its reads spend the
weight kept for acting: moving capital is acting, and must not wait behind the observers.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal
from typing import Any

from controller import failpoints
from controller.errors import ConfigError
from controller.logs import get_logger
from controller.rollout import keys
from controller.rollout.site import Site
from controller.store import audit
from controller.store.database import Database

log = get_logger(__name__)

CENT = Decimal("0.01")
"""Transfers are whole cents of USDT; a share's target is rounded down to one (never above the share)."""
ACTOR = "controller"
BASE_RECORDED = "capital.base_recorded"
"""The audit event of a ramp's base, written before its first transfer."""


@dataclass(frozen=True)
class Base:
    """Where an account's ramp started: its capital (USDT) and when (Clock seconds)."""

    capital: Decimal
    since: float

    def to_json(self) -> dict[str, Any]:
        return {"capital": str(self.capital), "since": self.since}

    @classmethod
    def from_json(cls, data: Any) -> Base:
        return cls(Decimal(str(data["capital"])), float(data["since"]))


async def recorded_bases(db: Database, rollout: int) -> dict[str, Base]:
    """The bases the rollout's ramps recorded before their first transfer, by ``environment/account``."""
    bases: dict[str, Base] = {}
    async for event in audit.query(db, audit.AuditFilter(kind=BASE_RECORDED, subject=f"rollout:{rollout}")):
        bases.setdefault(event.payload["account"], Base.from_json(event.payload))
    return bases


async def firm_total(site: Site, environment: str) -> Decimal:
    """The firm's capital as the cap measures it: the master's wallet plus every sub-account's."""
    master = site.master_of(environment)
    if master is None:
        raise ConfigError(f"environment {environment} has no master account (role: master): no capital can be moved")
    client = await site.client(environment, master, purpose="act")
    snapshot = await client.account_snapshot()
    subs = await client.sub_account_balances()
    return snapshot.total_wallet_balance + sum((s.wallet_balance for s in subs), Decimal(0))


async def capital_in(site: Site, environment: str, account: str, base: Base) -> Decimal:
    """The capital in the account now: the ramp's base plus the transfers the exchange records since."""
    client = await site.client(environment, account, purpose="act")
    moved = await client.transfers(start_time=base.since, end_time=site.clock.time() + 1.0)
    return base.capital + sum((b.change or Decimal(0) for update in moved for b in update.balances
                               if b.asset == "USDT"), Decimal(0))


async def move(db: Database, site: Site, *, environment: str, account: str, amount: Decimal, rollout: int,
               release: str, step: int | str, details: dict[str, Any]) -> dict[str, Any]:
    """Transfer ``amount`` USDT from the master to ``account`` (back when negative) with the transfer key,
    audited ``capital.transferred``; what was moved."""
    await keys.check_transfer(db, site, environment=environment, release=release, actor=ACTOR)
    master = site.master_of(environment)
    assert master is not None  # check_transfer refuses an environment without one
    accounts = {name: site.account(environment, name) for name in (master, account)}
    missing = [name for name, access in accounts.items() if not access.email]
    if missing:
        raise ConfigError(f"no capital is moved in {environment}: no email for {', '.join(missing)} "
                              "(email under each account in the daemon's config; transfers name accounts by it)")
    source, target = (master, account) if amount > 0 else (account, master)
    client = await site.client(environment, master, purpose="transfer")
    txn = await client.internal_transfer(from_email=accounts[source].email, to_email=accounts[target].email,
                                         amount=abs(amount))
    failpoints.hit("capital.transferred.before_audit")
    moved = {"amount": str(abs(amount)), "asset": "USDT", "from": f"{environment}/{source}",
             "to": f"{environment}/{target}", "step": step, "txn": txn, **details}
    await audit.record(db, site.clock, actor=ACTOR, kind="capital.transferred",
                       subject=f"rollout:{rollout}", release=release, payload=moved)
    log.info("capital_transferred", rollout=rollout, **{k: v for k, v in moved.items() if k != "txn"})
    return moved


async def fund(db: Database, site: Site, *, environment: str, account: str, share: Decimal, base: Base | None,
               rollout: int, release: str, stage: str, step: int) -> tuple[Base, dict[str, Any]]:
    """Bring the account to ``share`` of the firm's capital (ramp step ``step``, from 0); ``base``: the
    ramp's, None at its first step (then read now). The ramp's base and what was done."""
    if base is None:
        base = (await recorded_bases(db, rollout)).get(f"{environment}/{account}")
    if base is None:
        since = site.clock.time()
        wallet = (await (await site.client(environment, account, purpose="act")).account_snapshot()).total_wallet_balance
        base = Base(wallet, since)
        async with db.write(durable=True) as session:  # before any money moves: a rollback finds it whatever happens next
            await audit.append(session, site.clock, actor=ACTOR, kind=BASE_RECORDED, subject=f"rollout:{rollout}",
                               release=release, payload={"account": f"{environment}/{account}", "stage": stage,
                                                         **base.to_json()})
    total = await firm_total(site, environment)
    target = (share * total).quantize(CENT, rounding=ROUND_DOWN)
    before = await capital_in(site, environment, account, base)
    amount = (target - before).quantize(CENT, rounding=ROUND_DOWN)
    details = {"stage": stage, "share": str(share), "firm_total": str(total), "capital_before": str(before),
               "capital_after": str(before + amount)}
    if amount == 0:
        return base, {**details, "moved": "0"}
    moved = await move(db, site, environment=environment, account=account, amount=amount, rollout=rollout,
                       release=release, step=step + 1, details=details)
    return base, moved


async def give_back(db: Database, site: Site, *, environment: str, account: str, base: Base, rollout: int,
                    release: str) -> dict[str, Any]:
    """Return the account to the capital it had before its ramp (the rollback's ``return_capital`` step)."""
    before = await capital_in(site, environment, account, base)
    amount = (base.capital - before).quantize(CENT, rounding=ROUND_DOWN)
    details = {"capital_before": str(before), "capital_after": str(before + amount), "base": str(base.capital)}
    if amount == 0:
        return {**details, "moved": "0"}
    return await move(db, site, environment=environment, account=account, amount=amount, rollout=rollout,
                      release=release, step="rollback", details=details)
