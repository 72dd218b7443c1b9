"""The Site's exchange clients share one request gate and one weight budget per exchange host:
a 429/418 seen by any client holds back all of them, and observing never takes the weight that
acting (a rollback, a placement) has reserved. On the simulator, through python-binance."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from decimal import Decimal

import pytest
from binance.exceptions import BinanceAPIException

from controller.config.daemon import Endpoints
from controller.deploy.process import ProcessDeployer
from controller.exchange.client import RetryPolicy
from controller.exchange.errors import BudgetExhausted, RateLimited
from controller.metrics import ControllerMetrics
from controller.observe.exchange import ExchangeObserver
from controller.rollout.site import AccountAccess, EnvironmentAccess, Site
from controller.sim import AccountSpec, Simulator
from controller.sim.market import SYMBOLS
from tests.support.bot import strategy
from tests.support.clients import binance_client
from tests.support.exchange_observer import Recorder
from tests.support.simulator import make_sim

FAST_RETRY = RetryPolicy(attempts=2, initial_backoff=0.01, max_backoff=0.02, request_timeout=5)
TEN_SYMBOLS = [spec.symbol for spec in SYMBOLS[:10]]
TEN_ACCOUNTS = (AccountSpec("master", Decimal("90000"), master=True),
                *(AccountSpec(f"sub{i}", Decimal("1000")) for i in range(10)))
BAN_LIMIT = 100
"""The simulator's per-IP weight a minute in the ban tests: a bot on the same IP exhausts it quickly."""


@asynccontextmanager
async def site_on(sim: Simulator, clock, tmp_path, **options):
    accounts = {a.name: AccountAccess(a.name, a.api_key, a.api_secret, a.master) for a in sim.accounts}
    env = EnvironmentAccess("sim", Endpoints(sim.rest_url, sim.ws_url, sim.sapi_url), accounts,
                            ProcessDeployer(tmp_path / "instances", clock))
    site = Site(clock, {"sim": env}, retry=FAST_RETRY, **options)
    try:
        yield site
    finally:
        await site.close()


async def storm(sim: Simulator) -> float:
    """429 on every request for 30 s; returns how long the exchange asks clients to wait."""
    sim.faults.rate_limit_storm(30)
    return 30.0


async def ban(sim: Simulator) -> float:
    """A bot on the controller's IP ignores 429s until the IP is banned (418); returns the ban's length."""
    async with binance_client(sim, "canary") as bot:
        for _ in range(200):
            try:
                await bot.futures_mark_price()  # every symbol: weight 10, no signature
            except BinanceAPIException as exc:
                if exc.status_code == 418:
                    return float(exc.response.headers["Retry-After"])
    raise AssertionError("the simulator never banned the IP")


@pytest.mark.parametrize("refusal", [storm, ban], ids=["429", "418"])
async def test_a_refusal_seen_by_one_client_holds_back_every_client_of_the_site(refusal, clock, tmp_path):
    async with make_sim(clock=clock, weight_limit=BAN_LIMIT) as sim, site_on(sim, clock, tmp_path) as site:
        observe = await site.client("sim", "canary")
        act = await site.client("sim", "master", purpose="act")
        wait = await refusal(sim)
        with pytest.raises(RateLimited) as first:
            await observe.positions()
        assert wait - 1 <= first.value.retry_after <= wait
        sent = len(sim.requests)
        for call in (act.positions, act.open_orders, observe.open_orders, lambda: act.cancel_all_orders("BTCUSDT")):
            with pytest.raises(RateLimited, match="not sent"):
                await call()
        clock.advance(wait - 1)
        with pytest.raises(RateLimited, match="not sent"):
            await act.symbol_settings()
        assert len(sim.requests) == sent  # neither client sent anything during the back-off
        clock.advance(1.5)
        assert await act.open_orders("BTCUSDT") == [] and await observe.open_orders("BTCUSDT") == []


@pytest.mark.parametrize("refusal", [storm, ban], ids=["429", "418"])
async def test_a_client_opened_during_a_ban_sends_nothing_until_it_ends(refusal, clock, tmp_path):
    async with make_sim(clock=clock, weight_limit=BAN_LIMIT) as sim, site_on(sim, clock, tmp_path) as site:
        observe = await site.client("sim", "canary")
        wait = await refusal(sim)
        with pytest.raises(RateLimited):
            await observe.account_snapshot()
        sent = len(sim.requests)
        for purpose in ("act", "observe"):  # the master's clients are opened only now, during the ban
            with pytest.raises(RateLimited, match="not sent"):
                await site.client("sim", "master", purpose=purpose)
        assert len(sim.requests) == sent
        clock.advance(wait + 0.5)
        master = await site.client("sim", "master", purpose="act")
        assert (await master.account_snapshot()).account == "master"


async def test_observing_at_its_cap_leaves_acting_the_weight_a_rollback_of_ten_accounts_needs(clock, tmp_path):
    async with make_sim(clock=clock, accounts=TEN_ACCOUNTS) as sim, site_on(sim, clock, tmp_path) as site:
        watcher = await site.client("sim", "master")
        for read in (watcher.open_orders, lambda: watcher.open_orders("BTCUSDT")):  # weight 40, then 1
            with pytest.raises(BudgetExhausted):
                for _ in range(300):
                    await read()
        sent = len(sim.requests)
        with pytest.raises(BudgetExhausted):
            await watcher.positions()
        assert len(sim.requests) == sent  # observing is refused without sending

        async def make_safe(account: str) -> None:
            """What a rollback's first phase asks of the exchange for one account of ten symbols
            (`Rollback._cancel_orders`, `_positions`, `_restore_leverage`)."""
            client = await site.client("sim", account, purpose="act")
            for symbol in TEN_SYMBOLS:
                await client.cancel_all_orders(symbol)
                assert await client.open_orders(symbol) == []
            held = await client.positions()
            for symbol in TEN_SYMBOLS:
                assert await client.flatten(symbol, held=held) == []
                await client.set_margin_type(symbol, "ISOLATED")
                await client.set_leverage(symbol, 3)
            assert {s.symbol: s.leverage for s in await client.symbol_settings()
                    if s.symbol in TEN_SYMBOLS} == dict.fromkeys(TEN_SYMBOLS, 3)

        for i in range(10):
            await make_safe(f"sub{i}")
        with pytest.raises(BudgetExhausted):
            await watcher.positions()  # acting's spending never reopens observing's door


async def test_the_gate_exports_the_ban_left_and_counts_refused_requests(clock, tmp_path):
    metrics = ControllerMetrics()
    async with make_sim(clock=clock) as sim, site_on(sim, clock, tmp_path, metrics=metrics) as site:
        host = sim.rest_url.split("/")[2]
        assert metrics.registry.get_sample_value("canary_exchange_blocked_seconds", {"host": host}) == 0
        client = await site.client("sim", "canary")
        sim.faults.rate_limit_storm(30)
        with pytest.raises(RateLimited):
            await client.positions()
        assert metrics.registry.get_sample_value("canary_exchange_blocked_seconds", {"host": host}) == 30
        with pytest.raises(RateLimited):
            await client.positions()
        clock.advance(10)
        assert metrics.registry.get_sample_value("canary_exchange_blocked_seconds", {"host": host}) == 20
        assert metrics.registry.get_sample_value("canary_exchange_requests_refused_total",
                                                 {"reason": "rate_limited"}) == 1


async def test_two_stages_observers_connect_in_one_minute_within_the_daemons_default_observing_budget(clock, tmp_path):
    """A stage's start connects its accounts' observers at once: the canary's (which reads the master
    too, for its capital share) and the baseline's on the master. Each takes its first snapshot, and
    its user stream reads the gap since the placement. A short stage (the demo's shadow stage, a
    minute) is followed by the next one's observers within the same minute. On the daemon's default
    shares all of it fits the minute: at the old 240 a minute for observing, the demo's next stage
    waited up to 60 s for its stream, and its snapshots were refused meanwhile."""
    async with make_sim(clock=clock) as sim, site_on(sim, clock, tmp_path) as site:
        master = await site.client("sim", "master")
        canary = await site.client("sim", "canary")
        for stage in ("C-shadow", "C"):  # the clock stands still: a wait for the budget never ends
            records = {"canary": Recorder(), "master": Recorder()}
            observers = [
                ExchangeObserver(account="canary", client=canary, config=strategy(), clock=clock,
                                 sink=records["canary"], master=master, placed_at=clock.time()),
                ExchangeObserver(account="master", client=master, config=strategy(), clock=clock,
                                 sink=records["master"], placed_at=clock.time())]
            tasks = [asyncio.create_task(o.run(), name=f"test-observer-{o.account}") for o in observers]
            try:
                for record in records.values():
                    await record.wait_for(lambda record=record: 1.0 in record.values("stream_connected"), timeout=5)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
            assert [(o.passes, o.failed_passes) for o in observers] == [(1, 0), (1, 0)], stage
