"""What a peer sends, fed hostile values: a bot's /metrics page, a Prometheus answer, the user-data
stream's messages, the REST answers the controller parses and the key-restrictions answer. Each is
parsed or cleanly refused (a counted parse failure, `ScrapeError`, `PayloadError`, `ExchangeError`),
never an exception the caller does not expect."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from controller.exchange import parse
from controller.exchange.client import RetryPolicy
from controller.exchange.errors import ExchangeError
from controller.exchange.parse import PayloadError
from controller.exchange.permissions import KeyRights, key_rights
from controller.exchange.stream import UserStream
from controller.observe import metrics, promql
from tests.hostile.documents import mutated, spots
from tests.support.clients import exchange_clients
from tests.support.event_log import EventLog

HOSTILE = settings(derandomize=True, max_examples=150, deadline=None, database=None,
                   suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                          HealthCheck.data_too_large])
"""Deterministic (the same examples every run), so the suite is never flaky."""

CONTROL = st.characters(min_codepoint=0, max_codepoint=0x1F)
TEXT = st.lists(CONTROL | st.characters() | st.sampled_from(list('{}[]":,#=\n\\ .e+-') + ["NaN", "+Inf"]),
                max_size=200).map("".join)
JSON_SCALARS = (st.none() | st.booleans() | st.integers(min_value=-(10**30), max_value=10**30)
                | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20)
                | st.sampled_from(["NaN", "sNaN", "Infinity", "-Infinity", "1e999999999", "", "0x10", "1_0"]))
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=12), inner, max_size=4), max_leaves=16)


@st.composite
def mutations(draw, valid: Any) -> Any:
    """``valid`` with one to three of its values dropped or replaced by any JSON value."""
    document = valid
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        places = spots(document)
        if not places:
            break
        document = mutated(document, draw(st.sampled_from(places)), draw(JSON_VALUES), drop=draw(st.booleans()))
    return document


# --- a bot's /metrics page --------------------------------------------------------------------------

PAGE = """\
# HELP strategy_orders_total Orders sent.
# TYPE strategy_orders_total counter
strategy_orders_total{symbol="BTCUSDT"} 12
# TYPE strategy_signal_latency_seconds histogram
strategy_signal_latency_seconds_bucket{le="0.1"} 3
strategy_signal_latency_seconds_bucket{le="+Inf"} 4
strategy_signal_latency_seconds_sum 0.5
strategy_signal_latency_seconds_count 4
"""


@HOSTILE
@given(page=TEXT | st.builds(lambda cut, junk: PAGE[:cut] + junk + PAGE[cut:],
                              st.integers(min_value=0, max_value=len(PAGE)), TEXT))
def test_a_metrics_page_is_parsed_or_refused_as_a_scrape_error(page):
    try:
        samples = metrics.parse(page)
    except metrics.ScrapeError as refusal:
        assert str(refusal).startswith("not the Prometheus text format")
    else:
        assert all(isinstance(name, str) and isinstance(value, float) for name, _, value in samples)


# --- a Prometheus query answer ----------------------------------------------------------------------

VECTOR = {"resultType": "vector",
          "result": [{"metric": {"__name__": "up", "job": "bot"}, "value": [1700000000.5, "1"]}]}
SCALAR = {"resultType": "scalar", "result": [1700000000.5, "0.25"]}
PROMQL_REFUSALS = (ValueError, KeyError, TypeError, IndexError, AttributeError)
"""What `PromQLSource._query` turns into a `QueryError`; anything else would escape the query."""


@HOSTILE
@given(data=JSON_VALUES | mutations(VECTOR) | mutations(SCALAR))
@example(data={"resultType": "vector", "result": [{"metric": [], "value": [1, "1"]}]})
def test_a_prometheus_answer_is_read_or_refused_as_the_source_expects(data):
    try:
        promql.samples(data)
    except PROMQL_REFUSALS:
        pass


# --- the user-data stream -----------------------------------------------------------------------------

ORDER = {"e": "ORDER_TRADE_UPDATE", "E": 1700000000000, "T": 1700000000000, "o": {
    "s": "BTCUSDT", "c": "bot-1", "S": "BUY", "o": "MARKET", "f": "GTC", "q": "0.010", "p": "0", "ap": "50000",
    "x": "TRADE", "X": "FILLED", "i": 42, "l": "0.010", "z": "0.010", "L": "50000", "N": "USDT", "n": "0.2",
    "T": 1700000000000, "t": 7, "m": False, "R": False, "rp": "0"}}
ACCOUNT = {"e": "ACCOUNT_UPDATE", "E": 1700000000000, "T": 1700000000000, "a": {
    "m": "ORDER", "B": [{"a": "USDT", "wb": "1000", "cw": "1000", "bc": "0"}],
    "P": [{"s": "BTCUSDT", "pa": "0.010", "ep": "50000", "up": "0", "mt": "cross", "iw": "0", "ps": "BOTH"}]}}
LEVERAGE = {"e": "ACCOUNT_CONFIG_UPDATE", "E": 1700000000000, "T": 1700000000000, "ac": {"s": "BTCUSDT", "l": 12}}
MULTI_ASSETS = {"e": "ACCOUNT_CONFIG_UPDATE", "E": 1700000000000, "T": 1700000000000, "ai": {"j": True}}
MARGIN_CALL = {"e": "MARGIN_CALL", "E": 1700000000000, "cw": "3.16", "p": [
    {"s": "ETHUSDT", "ps": "LONG", "pa": "1.327", "mt": "CROSSED", "iw": "0", "mp": "187.17", "up": "-1.166",
     "mm": "1.614"}]}
MESSAGES = [ORDER, ACCOUNT, LEVERAGE, MULTI_ASSETS, MARGIN_CALL]


@pytest.fixture
async def client(sim, sim_clock):
    """A real client on a simulator account; the streams made on it only handle messages."""
    async with exchange_clients(sim, sim_clock, retry=RetryPolicy(attempts=1, request_timeout=5)) as open_client:
        yield await open_client("canary")


def test_the_valid_messages_each_give_events(client):
    stream = UserStream(client, ["BTCUSDT", "ETHUSDT"], EventLog())
    for message in MESSAGES:
        assert stream.handle_text(json.dumps(message)) == message["e"]
    assert stream.stats.parse_failures == 0 and stream.stats.events >= len(MESSAGES)


@HOSTILE
@given(text=TEXT | JSON_VALUES.map(json.dumps)
       | st.one_of(*(mutations(message) for message in MESSAGES)).map(json.dumps)
       | st.sampled_from(['{"e": NaN}', '{"e": "ORDER_TRADE_UPDATE", "E": Infinity}', "[" * 100_000,
                          '{"e": "MARGIN_CALL", "E": 1, "cw": "1", "p": ' + "9" * 5000 + "}"]))
def test_a_stream_message_gives_events_or_is_counted_as_a_parse_failure(client, text):
    stream = UserStream(client, ["BTCUSDT", "ETHUSDT"], EventLog())  # a new one: no message is a duplicate
    kind = stream.handle_text(text)
    assert (kind is None) == (stream.stats.parse_failures == 1)
    assert kind is None or isinstance(kind, str)


# --- REST answers -------------------------------------------------------------------------------------

REST: list[tuple[str, Callable[[Any], Any], Any]] = [
    ("positionRisk", parse.positions, [{"symbol": "BTCUSDT", "positionAmt": "0.01", "entryPrice": "50000",
                                        "markPrice": "50010", "unRealizedProfit": "0.1", "notional": "500.1",
                                        "liquidationPrice": "0", "isolatedMargin": "0", "maintMargin": "2",
                                        "updateTime": 1700000000000}]),
    ("symbolConfig", parse.symbol_settings, [{"symbol": "BTCUSDT", "leverage": 5, "marginType": "CROSSED"}]),
    ("account", lambda raw: parse.account(raw, "canary", 0.0),
     {"totalWalletBalance": "1000", "totalMarginBalance": "1000", "totalMaintMargin": "2",
      "availableBalance": "990", "totalUnrealizedProfit": "0"}),
    ("openOrders", parse.open_orders, [{"symbol": "BTCUSDT", "orderId": 1, "clientOrderId": "c", "side": "BUY",
                                        "type": "LIMIT", "status": "NEW", "origQty": "1", "price": "2",
                                        "executedQty": "0", "reduceOnly": False}]),
    ("userTrades", lambda raw: parse.user_trades(raw, "canary", 0.0),
     [{"symbol": "BTCUSDT", "id": 7, "orderId": 42, "side": "BUY", "price": "50000", "qty": "0.01",
       "quoteQty": "500", "commission": "0.2", "commissionAsset": "USDT", "realizedPnl": "0", "maker": False,
       "time": 1700000000000}]),
    ("leverageBracket", parse.leverage_brackets,
     [{"symbol": "BTCUSDT", "brackets": [{"bracket": 1, "initialLeverage": 125, "notionalCap": "50000",
                                          "notionalFloor": "0", "maintMarginRatio": "0.004"}]}]),
    ("exchangeInfo", parse.symbol_filters,
     {"symbols": [{"symbol": "BTCUSDT", "filters": [{"filterType": "PRICE_FILTER", "tickSize": "0.1"},
                                                    {"filterType": "LOT_SIZE", "stepSize": "0.001", "minQty": "0.001"},
                                                    {"filterType": "MIN_NOTIONAL", "notional": "5"}]}]}),
    ("premiumIndex", parse.mark_prices, [{"symbol": "BTCUSDT", "markPrice": "50000"}]),
    ("accountSummary", parse.sub_account_balances,
     {"futureAccountSummaryResp": {"subAccountList": [{"email": "c@x", "totalWalletBalance": "1",
                                                       "totalMarginBalance": "1"}]}}),
]


@pytest.mark.parametrize(("name", "reader", "valid"), REST, ids=[name for name, _, _ in REST])
def test_each_valid_rest_answer_parses(name, reader, valid):
    assert reader(valid)


@pytest.mark.parametrize(("name", "reader", "valid"), REST, ids=[name for name, _, _ in REST])
@settings(HOSTILE, max_examples=100)
@given(data=st.data())
def test_a_rest_answer_is_parsed_or_refused_as_a_payload_error(name, reader, valid, data):
    raw = data.draw(JSON_VALUES | mutations(valid), label="answer")
    try:
        reader(raw)
    except PayloadError as refusal:
        assert str(refusal)


@HOSTILE
@given(raw=JSON_VALUES | mutations({name: False for name in KeyRights.__dataclass_fields__}))
def test_a_key_restrictions_answer_is_read_or_refused_as_an_exchange_error(raw):
    try:
        rights = key_rights(raw)
    except ExchangeError as refusal:
        assert "API restrictions" in str(refusal)
    else:
        assert all(isinstance(getattr(rights, name), bool) for name in KeyRights.__dataclass_fields__)


def test_non_finite_numbers_in_an_answer_are_refused():
    """A price of NaN or infinity is not what Binance sends: it is refused, never computed with."""
    for spelling in ("NaN", "sNaN", "Infinity", "-Infinity", math.nan, math.inf):
        with pytest.raises(PayloadError):
            parse.mark_prices([{"symbol": "BTCUSDT", "markPrice": spelling}])
