"""The bot's own files: the strategy as the bot reads it (its ``bot:`` section and defects
included), and the exchange file, read only when only its owner can read it and refused
without echoing a value."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from reference_bot import BotSettings, ConfigError, ExchangeAccess, load_strategy
from tests.support.strategies import STRATEGY

GOOD = {"rest_url": "http://127.0.0.1:1/fapi", "ws_url": "ws://127.0.0.1:1/", "sapi_url": "http://127.0.0.1:1/sapi",
        "api_key": "k" * 64, "api_secret": "s" * 64}


def write(tmp_path, data, mode=0o600):
    path = tmp_path / "exchange.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    path.chmod(mode)
    return path


def strategy_file(tmp_path, text):
    path = tmp_path / "f.yaml"
    path.write_text(text)
    return path


def with_defects(text: str) -> str:
    """STRATEGY with a ``bot: defects:`` section appended; its first defect line is line 16."""
    return STRATEGY + "bot:\n  defects:\n" + "".join(f"    {line}\n" for line in text.splitlines())


def refusal(tmp_path, text: str) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_strategy(strategy_file(tmp_path, text))
    assert caught.value.exit_code == 2
    return caught.value


# --- the strategy file --------------------------------------------------------------------------


def test_the_strategy_reads_as_the_bot_trades_it(tmp_path):
    strategy = load_strategy(strategy_file(tmp_path, STRATEGY))
    assert strategy.symbols["SOLUSDT"].margin_type == "CROSSED" and strategy.bucket_of("ETHUSDT") == "majors"
    assert strategy.buckets["majors"].allocation == Decimal("0.6")
    assert strategy.order_notional("ETHUSDT", Decimal("1000")) == Decimal("600")


def test_streaming_prices_is_off_unless_the_strategy_turns_it_on(tmp_path):
    assert load_strategy(strategy_file(tmp_path, STRATEGY)).bot.stream_prices is False
    assert load_strategy(strategy_file(tmp_path, STRATEGY + "bot:\n  stream_prices: true\n")).bot.stream_prices is True
    error = refusal(tmp_path, STRATEGY + "bot:\n  stream_prices: sometimes\n")
    assert str(error) == f"{tmp_path / 'f.yaml'}:15: bot.stream_prices: expected true or false, got 'sometimes'"


def test_a_leverage_out_of_range_is_one_located_line(tmp_path):
    error = refusal(tmp_path, STRATEGY.replace("BTCUSDT: {leverage: 5}", "BTCUSDT: {leverage: 500}"))
    assert str(error) == f"{tmp_path / 'f.yaml'}:2: symbols.BTCUSDT.leverage: expected an integer from 1 to 125, got 500"


def test_a_symbol_in_no_bucket_is_refused_at_its_line(tmp_path):
    error = refusal(tmp_path, STRATEGY.replace("symbols: [SOLUSDT]", "symbols: [BTCUSDT]"))
    assert (error.line, error.field) == (11, "buckets.alts.symbols[0]")
    assert "already in bucket 'majors'" in error.message


def test_a_strategy_carries_no_defects_unless_it_names_them(tmp_path):
    defects = load_strategy(strategy_file(tmp_path, STRATEGY)).defects
    assert defects.model_dump() == {"wrong_leverage": None, "oversized_orders": None, "slow_signal_seconds": None,
                                    "unhandled_exception_after_seconds": None, "rejected_orders_burst": None,
                                    "oversized_exits": None, "exits_never_sent": False,
                                    "trades_in_shadow": False}


def test_every_defect_can_be_switched_on_together(tmp_path):
    defects = load_strategy(strategy_file(tmp_path, with_defects(
        "wrong_leverage: {symbol: BTCUSDT, leverage: 20}\noversized_orders: 3\nslow_signal_seconds: 0.25\n"
        "unhandled_exception_after_seconds: 30\nrejected_orders_burst: 5\noversized_exits: 2\n"
        "exits_never_sent: true\n"))).defects
    assert (defects.wrong_leverage.symbol, defects.wrong_leverage.leverage) == ("BTCUSDT", 20)
    assert defects.oversized_orders == Decimal("3") and defects.slow_signal_seconds == Decimal("0.25")
    assert defects.unhandled_exception_after_seconds == Decimal("30") and defects.rejected_orders_burst == 5
    assert defects.oversized_exits == Decimal("2") and defects.exits_never_sent is True


def test_a_wrong_leverage_must_name_a_configured_symbol(tmp_path):
    error = refusal(tmp_path, with_defects("wrong_leverage: {symbol: XRPUSDT, leverage: 20}\n"))
    assert (error.line, error.field) == (16, "bot.defects.wrong_leverage.symbol")
    assert "symbol XRPUSDT is not defined under symbols" in error.message


def test_a_wrong_leverage_equal_to_the_configured_one_is_refused(tmp_path):
    error = refusal(tmp_path, with_defects("wrong_leverage: {symbol: ETHUSDT, leverage: 4}\n"))
    assert (error.line, error.field) == (16, "bot.defects.wrong_leverage.leverage")
    assert "must differ" in error.message


def test_a_wrong_leverage_must_be_one_the_exchange_could_apply(tmp_path):
    error = refusal(tmp_path, with_defects("wrong_leverage: {symbol: ETHUSDT, leverage: 200}\n"))
    assert (error.line, error.field) == (16, "bot.defects.wrong_leverage.leverage")
    assert error.message == "expected an integer from 1 to 125, got 200"


def test_oversized_orders_must_be_larger_than_their_bucket_size(tmp_path):
    error = refusal(tmp_path, with_defects("oversized_orders: 1\n"))
    assert (error.line, error.field) == (16, "bot.defects.oversized_orders")
    assert error.message == "expected a number greater than 1 and at most 100, got 1"


def test_a_slow_signal_must_add_a_positive_delay(tmp_path):
    error = refusal(tmp_path, with_defects("slow_signal_seconds: 0\n"))
    assert (error.line, error.field) == (16, "bot.defects.slow_signal_seconds")
    assert error.message.startswith("expected a number greater than 0")


def test_an_unhandled_exception_cannot_come_before_the_start(tmp_path):
    error = refusal(tmp_path, with_defects("unhandled_exception_after_seconds: -1\n"))
    assert error.message == "expected a number of at least 0, got -1"


def test_a_rejected_orders_burst_is_a_whole_number_of_orders(tmp_path):
    error = refusal(tmp_path, with_defects("rejected_orders_burst: 0\n"))
    assert error.message == "expected an integer from 1 to 200, got 0"
    error = refusal(tmp_path, with_defects("rejected_orders_burst: 2.5\n"))
    assert error.message == "expected an integer, got 2.5"


def test_an_unknown_defect_is_refused_with_the_known_ones(tmp_path):
    error = refusal(tmp_path, with_defects("crash: true\n"))
    assert (error.line, error.field) == (16, "bot.defects.crash")
    assert "allowed: wrong_leverage, oversized_orders" in error.message


# --- the exchange file --------------------------------------------------------------------------


def test_an_exchange_file_gives_endpoints_and_keys_that_never_show_in_a_repr(tmp_path):
    access = ExchangeAccess.load(write(tmp_path, GOOD))
    assert access.endpoints.rest_url == GOOD["rest_url"] and access.endpoints.sapi_url == GOOD["sapi_url"]
    assert access.api_secret == GOOD["api_secret"]
    assert "sss" not in repr(access) and "kkk" not in repr(access)


def test_an_exchange_file_readable_by_others_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="chmod 600") as caught:
        ExchangeAccess.load(write(tmp_path, GOOD, mode=0o644))
    assert caught.value.exit_code == 2 and "sss" not in str(caught.value)


def test_a_missing_key_is_named_without_showing_any_value(tmp_path):
    with pytest.raises(ConfigError) as caught:
        ExchangeAccess.load(write(tmp_path, {k: v for k, v in GOOD.items() if k != "api_secret"}))
    assert caught.value.field == "api_secret" and "sss" not in str(caught.value)


def test_an_unknown_key_or_a_value_that_is_not_text_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="unknown key"):
        ExchangeAccess.load(write(tmp_path, {**GOOD, "passphrase": "x"}))
    with pytest.raises(ConfigError) as caught:
        ExchangeAccess.load(write(tmp_path, {**GOOD, "api_key": 12345}))
    assert caught.value.field == "api_key" and "12345" not in str(caught.value)


def test_a_file_that_is_not_json_is_refused_at_its_line(tmp_path):
    with pytest.raises(ConfigError) as caught:
        ExchangeAccess.load(write(tmp_path, '{\n  "rest_url": \n}'))
    assert caught.value.line == 3
    assert str(caught.value).startswith(f"{tmp_path / 'exchange.json'}:3: not valid JSON")


def test_settings_refuse_a_cadence_that_is_not_positive():
    with pytest.raises(ValueError, match="interval must be > 0"):
        BotSettings(interval=0)
    assert BotSettings(interval=2).entry_ttl == 10
