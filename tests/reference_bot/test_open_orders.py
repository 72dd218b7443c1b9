"""The bot reads its symbols' open orders a symbol at a time, or all at once when that weighs no more."""

from __future__ import annotations

from decimal import ROUND_UP, Decimal

from reference_bot.exchange import EVERY_OPEN_ORDER_WEIGHT
from tests.support.simulator import requests_to


async def resting_buy(client, symbol: str) -> str:
    """A buy far under the mark, which rests: its client order id."""
    rules, mark = (await client.trading_rules())[symbol], (await client.mark_prices())[symbol]
    price = (mark / 2 / rules.tick_size).to_integral_value() * rules.tick_size
    quantity = max(rules.min_qty, (rules.min_notional * 2 / price / rules.step_size).to_integral_value(ROUND_UP)
                   * rules.step_size)
    await client.new_order(symbol=symbol, side="BUY", order_type="LIMIT", quantity=quantity,
                           client_order_id=f"rest-{symbol}", price=price)
    return f"rest-{symbol}"


async def test_a_few_symbols_are_read_one_by_one_and_many_at_once(sim, client):
    listed = sorted(await client.mark_prices())
    resting = {symbol: await resting_buy(client, symbol) for symbol in listed[:2]}

    few = await client.open_orders_of(listed[:3])
    assert {s: [o.client_order_id for o in orders] for s, orders in few.items()} == \
        {listed[0]: [resting[listed[0]]], listed[1]: [resting[listed[1]]], listed[2]: []}
    assert requests_to(sim, "GET", "/fapi/v1/openOrders") == 3

    # As many symbols as one read of every open order weighs: that one read (the names past the
    # simulator's list have no orders), and only the symbols asked for in the answer.
    many = [*listed[1:], *(f"NONE{n}USDT" for n in range(EVERY_OPEN_ORDER_WEIGHT - len(listed) + 1))]
    assert len(many) == EVERY_OPEN_ORDER_WEIGHT
    every = await client.open_orders_of(many)
    assert requests_to(sim, "GET", "/fapi/v1/openOrders") == 4
    assert [r.params.get("symbol") for r in sim.requests if r.path == "/fapi/v1/openOrders"][-1] is None
    assert set(every) == set(many)
    assert {s: [o.client_order_id for o in orders] for s, orders in every.items() if orders} == \
        {listed[1]: [resting[listed[1]]]}
