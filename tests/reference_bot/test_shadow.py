"""The bot in shadow mode (``CANARY_SHADOW=1``), on the simulator with the account's read-only key:
it decides as usual, paper-fills its orders at the mark price under ``mode="shadow"``, and sends
nothing that changes the account; a release that trades anyway is refused by the exchange."""

from __future__ import annotations

from dataclasses import replace

from tests.support.bot import FAST, running, strategy
from tests.support.clients import bot_account

SHADOW = replace(FAST, shadow=True)
ORDER_PATHS = {"/fapi/v1/order", "/fapi/v1/allOpenOrders", "/fapi/v1/leverage", "/fapi/v1/marginType"}


async def placed_settings(sim, clock, config) -> None:
    """What the controller's placement does before a shadow bot starts: the config's margin type
    and leverage, set with the account's trading key."""
    trading = bot_account(sim, clock, "canary")
    try:
        for symbol, settings in config.symbols.items():
            await trading.set_margin_type(symbol, settings.margin_type)
            await trading.set_leverage(symbol, settings.leverage)
    finally:
        await trading.close()


async def test_in_shadow_the_bot_paper_fills_its_orders_and_changes_nothing_on_the_account(sim, clock):
    config = strategy()
    await placed_settings(sim, clock, config)
    read_only = bot_account(sim, clock, "canary", key="read-only")
    highest = dict.fromkeys(config.buckets, 0.0)

    def paper_traded() -> bool:
        for bucket in highest:
            highest[bucket] = max(highest[bucket], run.value("strategy_bucket_usage_ratio", bucket=bucket))
        return run.value("strategy_orders_total", outcome="filled", mode="shadow") >= 10

    try:
        async with running(read_only, clock, config, SHADOW) as run:
            await run.until(paper_traded)
            books = {s: run.bot.ledger.position(s) for s in config.symbols}
            await run.stop()
    finally:
        await read_only.close()

    canary = sim.accounts["canary"]
    assert [o for o in sim.engine.orders.values() if o.account == "canary"] == []
    assert not any(p.amount for p in canary.positions.values())
    assert any(books.values())  # the paper book holds what the orders would have opened
    writes = [r for r in sim.requests if r.account == "canary" and r.key == "read-only" and r.path in ORDER_PATHS]
    assert writes == []  # nothing was even tried: no cancel, margin type or leverage at start or stop
    assert run.bot.metrics.value("strategy_orders_total", outcome="filled") is None  # only under mode="shadow"
    assert run.value("strategy_orders_total", outcome="rejected", mode="shadow") == 0
    assert run.value("strategy_leverage_mismatch_total") == 0  # read back with the read-only key
    assert run.value("strategy_signal_latency_seconds_count") == 0  # no exchange acknowledgement to time
    assert run.value("strategy_order_queue_latency_seconds_count") >= 10
    for bucket, spec in config.buckets.items():
        assert highest[bucket] <= float(spec.allocation) * 1.02
    assert highest["majors"] > 0


async def test_a_release_that_trades_in_shadow_is_refused_by_the_exchange(sim, clock):
    config = strategy(trades_in_shadow=True)
    await placed_settings(sim, clock, config)
    read_only = bot_account(sim, clock, "canary", key="read-only")
    try:
        async with running(read_only, clock, config, SHADOW) as run:
            await run.until(lambda: run.value("strategy_orders_total", outcome="rejected", mode="shadow") >= 3)
    finally:
        await read_only.close()

    assert [o for o in sim.engine.orders.values() if o.account == "canary"] == []
    refused = [r for r in sim.requests if r.account == "canary" and r.path == "/fapi/v1/order"]
    assert len(refused) >= 3 and {(r.method, r.key, r.status, r.code) for r in refused} == {
        ("POST", "read-only", 401, -2015)}
