"""The strategy, manifest and daemon models, and the shipped examples that document them."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from controller.config import (
    DaemonConfig,
    Endpoints,
    ReleaseManifest,
    StrategyConfig,
    load_daemon_config,
    load_model,
    load_model_text,
)
from controller.errors import ConfigError

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

STRATEGY = """\
symbols:
  BTCUSDT: {leverage: 5}
  ETHUSDT: {leverage: 4}
  SOLUSDT: {leverage: 3}
buckets:
  majors:
    allocation: 0.6
    symbols: [BTCUSDT, ETHUSDT]
  alts:
    allocation: 0.3
    symbols: [SOLUSDT]
sizing:
  order_fraction: 0.25
"""

MANIFEST = """\
name: reference-bot
command: ["{python}", "-m", "bot", "--config", "{config}", "--port", "{metrics_port}"]
metrics:
  port: 0
artifact:
  path: ../build/bot
"""

DAEMON = """\
database:
  url: sqlite:///state/canary.db
environments:
  sim:
    kind: sim
pipeline: pipelines/default.yaml
"""

TESTNET = """\
environments:
  testnet:
    kind: testnet
    accounts:
      master:
        api_key: env:KEY
        api_secret: env:SECRET
"""


def refusal(model_cls, text: str) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_model_text(model_cls, text, "f.yaml")
    return caught.value


# --- examples ---------------------------------------------------------------------------------


EXAMPLE_MODELS = {"controller": DaemonConfig, "strategy": StrategyConfig, "manifest": ReleaseManifest}


def load_example(path: Path) -> object:
    """Examples are named for what they hold: ``controller*``, ``strategy*``, ``manifest*``."""
    if path.name.startswith("controller"):
        return load_daemon_config(path)
    if path.name.startswith("strategy"):
        return load_model(StrategyConfig, path)
    if path.name.startswith("manifest"):
        manifest = load_model(ReleaseManifest, path)
        assert manifest.artifact_path(path).exists()
        return manifest
    pytest.skip(f"{path.name}: not a config example (another package's tests load it)")


@pytest.mark.parametrize("path", sorted(EXAMPLES.rglob("*.yaml")), ids=lambda p: str(p.relative_to(EXAMPLES)))
def test_every_example_file_loads(path):
    loaded = load_example(path)  # skips a file that is not a config example
    model = next(cls for prefix, cls in EXAMPLE_MODELS.items() if path.name.startswith(prefix))
    assert isinstance(loaded, model)


# --- strategy ---------------------------------------------------------------------------------


def test_allocations_summing_above_one_are_refused_on_buckets():
    error = refusal(StrategyConfig, STRATEGY.replace("allocation: 0.6", "allocation: 0.8"))
    assert (error.line, error.field) == (5, "buckets")
    assert "sum to 1.1" in error.message


def test_a_bucket_symbol_must_be_defined_under_symbols():
    error = refusal(StrategyConfig, STRATEGY.replace("[SOLUSDT]", "[SOLUSDT, XRPUSDT]"))
    assert (error.line, error.field) == (11, "buckets.alts.symbols[1]")
    assert error.message == "symbol XRPUSDT is not defined under symbols"


def test_a_symbol_in_two_buckets_is_refused_where_it_repeats():
    error = refusal(StrategyConfig, STRATEGY.replace("[SOLUSDT]", "[SOLUSDT, ETHUSDT]"))
    assert (error.line, error.field) == (11, "buckets.alts.symbols[1]")
    assert "already in bucket 'majors'" in error.message


def test_a_symbol_in_no_bucket_is_refused():
    error = refusal(StrategyConfig, STRATEGY.replace("[BTCUSDT, ETHUSDT]", "[BTCUSDT]"))
    assert (error.line, error.field) == (3, "symbols.ETHUSDT")


def test_each_symbol_knows_its_bucket_and_its_exact_notional_limits():
    config = load_model_text(StrategyConfig, STRATEGY, "s.yaml")
    assert config.bucket_of("SOLUSDT") == "alts"
    assert config.notional_limit("ETHUSDT", Decimal("1000")) == Decimal("2400")
    assert config.order_notional("ETHUSDT", Decimal("1000")) == Decimal("600")
    assert config.sizing.max_open_orders_per_symbol == 2
    assert config.symbols["BTCUSDT"].margin_type == "CROSSED"


# --- manifest ---------------------------------------------------------------------------------


def test_an_unknown_placeholder_in_the_command_is_refused_at_its_item():
    error = refusal(ReleaseManifest, MANIFEST.replace('"{config}"', '"{cfg}"'))
    assert (error.line, error.field) == (2, "command[4]")
    assert error.message.startswith("unknown placeholder {cfg} (allowed: {python}, {config}")


def test_the_command_fills_in_its_placeholders():
    manifest = load_model_text(ReleaseManifest, MANIFEST, "m.yaml")
    assert manifest.argv(python="/venv/bin/python", config="/s.yaml", metrics_port=9400,
                         exchange_file="/x.json") == [
        "/venv/bin/python", "-m", "bot", "--config", "/s.yaml", "--port", "9400"]


def test_an_env_name_that_looks_like_a_secret_is_refused():
    error = refusal(ReleaseManifest, MANIFEST + "env:\n  LOG_LEVEL: info\n  BINANCE_API_KEY: abc\n")
    assert (error.line, error.field) == (9, "env.BINANCE_API_KEY")
    assert "abc" not in str(error)


def test_the_artifact_path_counts_from_the_manifest_directory(tmp_path):
    manifest = load_model_text(ReleaseManifest, MANIFEST, "m.yaml")
    assert manifest.artifact_path(tmp_path / "releases" / "manifest.yaml") == tmp_path / "build" / "bot"


def test_an_artifact_digest_must_be_lowercase_hex():
    error = refusal(ReleaseManifest, MANIFEST + "  sha256: " + "AB" * 32 + "\n")
    assert (error.line, error.field) == (7, "artifact.sha256")


# --- daemon -----------------------------------------------------------------------------------


def test_a_database_url_with_a_password_is_refused_without_repeating_it():
    error = refusal(DaemonConfig, DAEMON.replace("sqlite:///state/canary.db", "postgresql://canary:hunter2@db/canary"))
    assert (error.line, error.field) == (2, "database.url")
    assert "put the password in database.password as file:/ or env: reference" in error.message
    assert "hunter2" not in str(error)


def test_a_database_url_must_be_sqlite_or_postgresql():
    error = refusal(DaemonConfig, DAEMON.replace("sqlite:///", "mysql://"))
    assert (error.line, error.field) == (2, "database.url")


def test_relative_paths_count_from_the_config_files_directory(tmp_path):
    path = tmp_path / "etc" / "controller.yaml"
    path.parent.mkdir()
    path.write_text(DAEMON)
    config = load_daemon_config(path)
    assert config.policies_dir == path.parent / "policies"
    assert config.pipeline == path.parent / "pipelines" / "default.yaml"
    assert config.database.url == f"sqlite:///{path.parent}/state/canary.db"


def test_a_testnet_environment_needs_an_account():
    error = refusal(DaemonConfig, "environments:\n  testnet:\n    kind: testnet\n")
    assert (error.line, error.field) == (3, "environments.testnet.kind")


def test_exchange_environments_default_to_binances_futures_endpoints():
    testnet = load_model_text(DaemonConfig, TESTNET, "c.yaml").environments["testnet"]
    live = load_model_text(DaemonConfig, TESTNET.replace("kind: testnet", "kind: live"), "c.yaml").environments["testnet"]
    assert testnet.endpoints() == Endpoints("https://testnet.binancefuture.com", "wss://fstream.binancefuture.com", None)
    assert live.endpoints() == Endpoints("https://fapi.binance.com", "wss://fstream.binance.com",
                                         "https://api.binance.com/sapi")



def test_endpoints_take_python_binances_form_for_the_exchange_client():
    live = Endpoints("https://fapi.binance.com/", "wss://fstream.binance.com", "https://api.binance.com/sapi/")
    assert live.for_binance() == Endpoints("https://fapi.binance.com/fapi", "wss://fstream.binance.com/",
                                           "https://api.binance.com/sapi")
    proxied = Endpoints("http://proxy:8080/fapi/", "ws://proxy:8081/", None)
    assert proxied.for_binance() == Endpoints("http://proxy:8080/fapi", "ws://proxy:8081/", None)
    assert proxied.for_binance().for_binance() == proxied.for_binance()
    with pytest.raises(ValueError, match="a REST and a websocket URL are needed"):
        Endpoints(None, None).for_binance()

def test_the_admin_api_is_refused_on_all_interfaces_unless_allowed():
    error = refusal(DaemonConfig, DAEMON + "admin:\n  host: 0.0.0.0\n")
    assert (error.line, error.field) == (8, "admin.host")
    allowed = load_model_text(DaemonConfig, DAEMON + "admin:\n  host: 0.0.0.0\n  allow_remote: true\n", "c.yaml")
    assert allowed.admin.host == "0.0.0.0"


def test_a_capital_cap_belongs_to_sub_accounts_only():
    error = refusal(DaemonConfig, TESTNET + "        capital_cap: 0.02\n")
    assert (error.line, error.field) == (8, "environments.testnet.accounts.master.capital_cap")
    sub = load_model_text(DaemonConfig, TESTNET + "        role: sub\n        capital_cap: 0.02\n", "c.yaml")
    assert sub.environments["testnet"].accounts["master"].capital_cap == Decimal("0.02")


@pytest.mark.parametrize("value, shown", [("yes", "got true"), ('"5"', "got '5'")])
def test_an_integer_field_refuses_booleans_and_quoted_numbers(value, shown):
    error = refusal(StrategyConfig, STRATEGY.replace("BTCUSDT: {leverage: 5}", f"BTCUSDT: {{leverage: {value}}}"))
    assert str(error).startswith("f.yaml:2: symbols.BTCUSDT.leverage: expected an integer")
    assert shown in str(error)


# --- strategy defects (the reference bot's deliberate faults) ---------------------------------


def with_defects(text: str) -> str:
    """STRATEGY with a ``defects:`` section appended; its first defect line is line 15."""
    return STRATEGY + "defects:\n" + text


def test_a_strategy_carries_no_defects_unless_it_names_them():
    defects = load_model_text(StrategyConfig, STRATEGY, "s.yaml").defects
    assert defects.model_dump() == {"wrong_leverage": None, "oversized_orders": None, "slow_signal_seconds": None,
                                    "unhandled_exception_after_seconds": None, "rejected_orders_burst": None,
                                    "oversized_exits": None, "exits_never_sent": False}


def test_every_defect_can_be_switched_on_together():
    defects = load_model_text(StrategyConfig, with_defects(
        "  wrong_leverage: {symbol: BTCUSDT, leverage: 20}\n  oversized_orders: 3\n  slow_signal_seconds: 0.25\n"
        "  unhandled_exception_after_seconds: 30\n  rejected_orders_burst: 5\n  oversized_exits: 2\n"
        "  exits_never_sent: true\n"), "s.yaml").defects
    assert (defects.wrong_leverage.symbol, defects.wrong_leverage.leverage) == ("BTCUSDT", 20)
    assert defects.oversized_orders == Decimal("3") and defects.slow_signal_seconds == Decimal("0.25")
    assert defects.unhandled_exception_after_seconds == Decimal("30") and defects.rejected_orders_burst == 5
    assert defects.oversized_exits == Decimal("2") and defects.exits_never_sent is True


def test_a_wrong_leverage_must_name_a_configured_symbol():
    error = refusal(StrategyConfig, with_defects("  wrong_leverage: {symbol: XRPUSDT, leverage: 20}\n"))
    assert (error.line, error.field) == (15, "defects.wrong_leverage.symbol")
    assert "symbol XRPUSDT is not defined under symbols" in error.message


def test_a_wrong_leverage_equal_to_the_configured_one_is_refused():
    error = refusal(StrategyConfig, with_defects("  wrong_leverage: {symbol: ETHUSDT, leverage: 4}\n"))
    assert (error.line, error.field) == (15, "defects.wrong_leverage.leverage")
    assert "must differ" in error.message


def test_a_wrong_leverage_must_be_one_the_exchange_could_apply():
    error = refusal(StrategyConfig, with_defects("  wrong_leverage: {symbol: ETHUSDT, leverage: 200}\n"))
    assert str(error) == "f.yaml:15: defects.wrong_leverage.leverage: expected an integer from 1 to 125, got 200"


def test_oversized_orders_must_be_larger_than_their_bucket_size():
    error = refusal(StrategyConfig, with_defects("  oversized_orders: 1\n"))
    assert str(error) == ("f.yaml:15: defects.oversized_orders: expected a number greater than 1 and at most 100, "
                          "got 1")


def test_a_slow_signal_must_add_a_positive_delay():
    error = refusal(StrategyConfig, with_defects("  slow_signal_seconds: 0\n"))
    assert (error.line, error.field) == (15, "defects.slow_signal_seconds")
    assert error.message.startswith("expected a number greater than 0")


def test_an_unhandled_exception_cannot_come_before_the_start():
    error = refusal(StrategyConfig, with_defects("  unhandled_exception_after_seconds: -1\n"))
    assert str(error) == "f.yaml:15: defects.unhandled_exception_after_seconds: expected a number of at least 0, got -1"


def test_a_rejected_orders_burst_is_a_whole_number_of_orders():
    error = refusal(StrategyConfig, with_defects("  rejected_orders_burst: 0\n"))
    assert str(error) == "f.yaml:15: defects.rejected_orders_burst: expected an integer from 1 to 200, got 0"
    error = refusal(StrategyConfig, with_defects("  rejected_orders_burst: 2.5\n"))
    assert error.message == "expected an integer, got 2.5"


def test_an_unknown_defect_is_refused_with_the_known_ones():
    error = refusal(StrategyConfig, with_defects("  crash: true\n"))
    assert (error.line, error.field) == (15, "defects.crash")
    assert "allowed: wrong_leverage, oversized_orders" in error.message
