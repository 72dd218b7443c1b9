"""The strategy, manifest and daemon models, and the shipped examples that document them."""

from __future__ import annotations

import sys
from decimal import Decimal
from pathlib import Path

import pytest

import reference_bot
from controller.config import (
    DaemonConfig,
    Endpoints,
    ReleaseManifest,
    StrategyConfig,
    load_daemon_config,
    load_model,
    load_model_text,
)
from controller import shipped
from controller.errors import ConfigError
from tests.support.checkout import EXAMPLES
from tests.support.strategies import STRATEGY


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


def packaged(name: str) -> str:
    """The manifest with its artifact given as the installed package ``name``."""
    return MANIFEST.replace("  path: ../build/bot\n", f"  package: {name}\n")


def test_an_artifact_package_is_the_folder_it_is_installed_in_found_without_importing_it(tmp_path, monkeypatch):
    package = tmp_path / "site" / "fresh_release_bot"
    package.mkdir(parents=True)
    marker = tmp_path / "imported"
    (package / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    manifest = load_model_text(ReleaseManifest, packaged("fresh_release_bot"), "m.yaml")
    assert manifest.artifact_path(tmp_path / "elsewhere" / "m.yaml") == package
    assert not marker.exists() and "fresh_release_bot" not in sys.modules


def test_the_shipped_manifests_name_the_reference_bot_package():
    for path in (shipped.demo_manifest(), shipped.reference_bot_file("manifest.yaml")):
        manifest = load_model(ReleaseManifest, path)
        assert manifest.artifact.package == "reference_bot"
        assert manifest.artifact_path(path) == Path(reference_bot.__file__).resolve().parent


@pytest.mark.parametrize("artifact, line, field, message", [
    ("  path: bot\n  package: bot\n", 5, "artifact", "give exactly one of path (a file or folder) and package"),
    ("  sha256: " + "ab" * 32 + "\n", 5, "artifact", "give exactly one of path (a file or folder) and package"),
    ("  package: bots.reference\n", 6, "artifact.package", "expected the import name of a top-level package"),
    ("  package: ../bot\n", 6, "artifact.package", "expected the import name of a top-level package"),
], ids=["both", "neither", "dotted", "a-path"])
def test_an_artifact_names_exactly_one_path_or_top_level_package(artifact, line, field, message):
    text = MANIFEST.replace("artifact:\n  path: ../build/bot\n", "artifact:\n" + artifact)
    error = refusal(ReleaseManifest, text)
    assert (error.line, error.field) == (line, field) and message in error.message


@pytest.mark.parametrize("name, message", [
    ("no_such_release_package", "no Python package no_such_release_package is installed for"),
    ("sys", "sys is a single module (built-in), not a package folder"),
])
def test_an_artifact_package_that_is_not_an_installed_package_folder_is_refused_naming_file_and_field(name, message):
    manifest = load_model_text(ReleaseManifest, packaged(name), "m.yaml")
    with pytest.raises(ConfigError) as refused:
        manifest.artifact_path(Path("/releases/manifest.yaml"))
    assert (refused.value.file, refused.value.field) == ("/releases/manifest.yaml", "artifact.package")
    assert message in refused.value.message


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
    path.write_text(DAEMON + "policies_dir: policies\n")
    config = load_daemon_config(path)
    assert config.policies_dir == path.parent / "policies"
    assert config.pipeline == path.parent / "pipelines" / "default.yaml"
    assert config.database.url == f"sqlite:///{path.parent}/state/canary.db"


def test_the_policies_folder_defaults_to_the_shipped_policies_wherever_the_config_is(tmp_path):
    path = tmp_path / "etc" / "controller.yaml"
    path.parent.mkdir()
    path.write_text(DAEMON)
    config = load_daemon_config(path)
    assert config.policies_dir == shipped.policies_dir()
    assert sorted(p.name for p in config.policies_dir.glob("*.yaml")) == [
        "stage-a.yaml", "stage-b.yaml", "stage-c-shadow.yaml", "stage-c.yaml", "stage-d.yaml"]


def test_a_testnet_environment_needs_an_account():
    error = refusal(DaemonConfig, "environments:\n  testnet:\n    kind: testnet\n")
    assert (error.line, error.field) == (3, "environments.testnet.kind")


def test_exchange_environments_default_to_binances_futures_endpoints():
    testnet = load_model_text(DaemonConfig, TESTNET, "c.yaml").environments["testnet"]
    live = load_model_text(DaemonConfig, TESTNET.replace("kind: testnet", "kind: live") + "    confirm_live: true\n",
                           "c.yaml").environments["testnet"]
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
    error = refusal(DaemonConfig, DAEMON + "admin:\n  host: 0.0.0.0\n  allow_remote: true\n")
    assert (error.line, error.field) == (7, "admin.token") and "a bearer token" in str(error)
    allowed = load_model_text(DaemonConfig, DAEMON + "admin:\n  host: 0.0.0.0\n  allow_remote: true\n"
                              "  token: env:CANARY_ADMIN_TOKEN\n", "c.yaml")
    assert allowed.admin.host == "0.0.0.0" and allowed.admin.token.target == "CANARY_ADMIN_TOKEN"


def test_acting_keeps_a_reserve_of_the_request_weight_and_observing_keeps_some():
    default = load_model_text(DaemonConfig, DAEMON, "c.yaml").request_weight
    assert (default.share, default.act_reserve) == (Decimal("0.75"), Decimal("0.50"))
    error = refusal(DaemonConfig, DAEMON + "request_weight:\n  share: 0.2\n  act_reserve: 0.2\n")
    assert (error.line, error.field) == (9, "request_weight.act_reserve")
    assert "expected less than share (0.2)" in str(error)


def test_a_capital_cap_belongs_to_sub_accounts_only():
    error = refusal(DaemonConfig, TESTNET + "        capital_cap: 0.02\n")
    assert (error.line, error.field) == (8, "environments.testnet.accounts.master.capital_cap")
    sub = load_model_text(DaemonConfig, TESTNET + "        role: sub\n        capital_cap: 0.02\n", "c.yaml")
    assert sub.environments["testnet"].accounts["master"].capital_cap == Decimal("0.02")


def test_a_shadow_key_needs_its_secret_beside_it():
    error = refusal(DaemonConfig, TESTNET + "        shadow_key: env:SHADOW_KEY\n")
    assert (error.line, error.field) == (8, "environments.testnet.accounts.master.shadow_key")
    assert "a shadow key needs both shadow_key and shadow_secret" in str(error) and "shadow_secret is missing" in str(error)
    account = load_model_text(DaemonConfig, TESTNET + "        shadow_key: env:SHADOW_KEY\n"
                              "        shadow_secret: file:/run/credentials/shadow\n", "c.yaml"
                              ).environments["testnet"].accounts["master"]
    assert (account.shadow_key.target, account.shadow_secret.target) == ("SHADOW_KEY", "/run/credentials/shadow")


def test_a_transfer_key_needs_its_secret_and_belongs_to_the_master():
    error = refusal(DaemonConfig, TESTNET + "        transfer_key: env:TRANSFER_KEY\n")
    assert (error.line, error.field) == (8, "environments.testnet.accounts.master.transfer_key")
    assert "transfer_secret is missing" in str(error)
    pair = "        transfer_key: env:TRANSFER_KEY\n        transfer_secret: env:TRANSFER_SECRET\n"
    error = refusal(DaemonConfig, TESTNET + "        role: sub\n" + pair)
    assert error.field == "environments.testnet.accounts.master.transfer_key"
    assert "belongs to the master account" in str(error)
    account = load_model_text(DaemonConfig, TESTNET + "        email: treasury@example.com\n" + pair, "c.yaml"
                              ).environments["testnet"].accounts["master"]
    assert (account.email, account.transfer_key.target) == ("treasury@example.com", "TRANSFER_KEY")
    error = refusal(DaemonConfig, TESTNET + "        email: treasury\n")
    assert error.field == "environments.testnet.accounts.master.email"


@pytest.mark.parametrize("value, shown", [("yes", "got true"), ('"5"', "got '5'")])
def test_an_integer_field_refuses_booleans_and_quoted_numbers(value, shown):
    error = refusal(StrategyConfig, STRATEGY.replace("BTCUSDT: {leverage: 5}", f"BTCUSDT: {{leverage: {value}}}"))
    assert str(error).startswith("f.yaml:2: symbols.BTCUSDT.leverage: expected an integer")
    assert shown in str(error)


# --- the release's own section -----------------------------------------------------------------


def test_the_releases_own_section_is_kept_as_written_and_never_read():
    config = load_model_text(StrategyConfig, STRATEGY + "bot:\n  defects: {exits_never_sent: true}\n  any: [1, x]\n",
                             "s.yaml")
    assert config.bot == {"defects": {"exits_never_sent": True}, "any": [1, "x"]}
    assert load_model_text(StrategyConfig, STRATEGY, "s.yaml").bot == {}


def test_a_release_setting_outside_its_own_section_is_refused():
    error = refusal(StrategyConfig, STRATEGY + "defects:\n  exits_never_sent: true\n")
    assert (error.line, error.field) == (14, "defects")
    assert "unknown field 'defects'" in error.message


LIVE = TESTNET.replace("kind: testnet", "kind: live")
LIVE_SUB = "      canary:\n        role: sub\n        api_key: env:CANARY_KEY\n        api_secret: env:CANARY_SECRET\n"


def test_live_refuses_to_start_without_an_explicit_confirmation():
    error = refusal(DaemonConfig, LIVE)
    assert (error.line, error.field) == (3, "environments.testnet.kind")
    assert "set confirm_live: true" in error.message
    confirmed = load_model_text(DaemonConfig, LIVE + "    confirm_live: true\n", "c.yaml")
    assert confirmed.environments["testnet"].confirm_live is True


def test_confirm_live_belongs_to_live_environments_only():
    error = refusal(DaemonConfig, TESTNET + "    confirm_live: true\n")
    assert (error.line, error.field) == (8, "environments.testnet.confirm_live")


def test_live_refuses_a_sub_account_without_a_capital_cap():
    error = refusal(DaemonConfig, LIVE + LIVE_SUB + "    confirm_live: true\n")
    assert (error.line, error.field) == (9, "environments.testnet.accounts.canary.role")
    assert "every sub account needs a capital_cap" in error.message
    capped = load_model_text(DaemonConfig, LIVE + LIVE_SUB + "        capital_cap: 0.02\n    confirm_live: true\n",
                             "c.yaml")
    assert capped.environments["testnet"].accounts["canary"].capital_cap == Decimal("0.02")
