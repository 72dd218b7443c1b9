"""The shipped account-risk policies end to end: a canary holding more than its capital cap, and
a leveraged position caught in a price crash (margin call, margin ratio)."""

from __future__ import annotations

import asyncio
import contextlib
from decimal import Decimal

from controller.analysis.policy import load_policies
from controller.analysis.verdict import Outcome
from controller.config.daemon import Endpoints
from controller.exchange.client import ExchangeClient
from controller.exchange.weights import WeightBudget
from controller.observe.exchange import ExchangeObserver
from controller.sim import AccountSpec, Simulator
from controller.verification import Verification
from tests.support.bot import strategy
from tests.support.checkout import REPO
from tests.support.exchange_observer import FAST_RETRY, SNAPSHOT_EVERY
from tests.support.verdicts import Verdicts

SHIPPED = {p.name: p for f in load_policies([REPO / "policies"]).values() for p in f.policies}


@contextlib.asynccontextmanager
async def verified(client, master, clock, config, names):
    judged = Verdicts()
    verification = Verification(policies=[SHIPPED[n] for n in names], config=config, clock=clock,
                                on_verdicts=judged, capital_cap=0.02, tick=0.2)
    observer = ExchangeObserver(account=client.account, client=client, config=config, clock=clock,
                                sink=verification.sink, master=master, snapshot_every=SNAPSHOT_EVERY)
    task = asyncio.create_task(verification.run([observer.run]), name="test-verification")
    try:
        yield judged
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_canary_holding_more_than_its_cap_fails_the_capital_share_policy(clock):
    accounts = (AccountSpec("master", Decimal("95000"), master=True), AccountSpec("canary", Decimal("5000")))
    async with Simulator(clock=clock, seed=2, accounts=accounts, weight_limit=1_000_000) as sim:
        clients = [ExchangeClient(account=name, api_key=sim.accounts[name].api_key,
                                  api_secret=sim.accounts[name].api_secret,
                                  endpoints=Endpoints(sim.rest_url, sim.ws_url, sim.sapi_url), clock=clock,
                                  budget=WeightBudget(clock, share=1.0, limit=1_000_000), retry=FAST_RETRY)
                   for name in ("canary", "master")]
        try:
            for client in clients:
                await client.sync_time()
            canary, master = clients
            async with verified(canary, master, clock, strategy(), ["c-capital-share-within-cap"]) as judged:
                await judged.until_outcomes({"c-capital-share-within-cap": Outcome.FAIL})
        finally:
            for client in clients:
                await client.close()
    verdict = judged.latest["c-capital-share-within-cap"]
    assert verdict.value == 0.05 and verdict.threshold == 0.02 and verdict.action == "rollback"


async def test_a_price_crash_on_a_leveraged_position_fails_the_margin_policies(sim, connect, clock):
    canary, master = await connect("canary"), await connect("master")
    config = strategy({"symbols": {"BTCUSDT": {"leverage": 20}},
                       "buckets": {"majors": {"allocation": "1", "symbols": ["BTCUSDT"]}},
                       "sizing": {"order_fraction": "0.9"}})
    await canary.set_leverage("BTCUSDT", 20)
    names = ["c-no-margin-call", "d-no-margin-call", "c-margin-ratio-bounded"]
    async with verified(canary, master, clock, config, names) as judged:
        await judged.until_outcomes({n: Outcome.PASS for n in names})
        price = (await canary.mark_prices("BTCUSDT"))["BTCUSDT"]
        quantity = (Decimal(1800) * 18 / price).quantize(Decimal("0.001"))   # 18x the canary's capital
        await canary.new_order(symbol="BTCUSDT", side="BUY", order_type="MARKET", quantity=quantity)
        sim.set_price("BTCUSDT", (price * Decimal("0.945")).quantize(Decimal("0.1")))  # -5.5 %: 99 % of margin gone
        await judged.until_outcomes({n: Outcome.FAIL for n in names})
    assert judged.latest["c-margin-ratio-bounded"].value > 0.3
    assert all(judged.latest[n].action == "rollback" for n in names)
