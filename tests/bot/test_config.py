"""The exchange file: read only when only its owner can read it, and refused without echoing a value."""

from __future__ import annotations

import json

import pytest

from controller.config.secrets import SecretError
from controller.errors import ConfigError
from controller.sim.bot import BotSettings, ExchangeAccess

GOOD = {"rest_url": "http://127.0.0.1:1/fapi", "ws_url": "ws://127.0.0.1:1/", "sapi_url": "http://127.0.0.1:1/sapi",
        "api_key": "k" * 64, "api_secret": "s" * 64}


def write(tmp_path, data, mode=0o600):
    path = tmp_path / "exchange.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    path.chmod(mode)
    return path


def test_an_exchange_file_gives_endpoints_and_keys_that_never_show_in_a_repr(tmp_path):
    access = ExchangeAccess.load(write(tmp_path, GOOD))
    assert access.endpoints.rest_url == GOOD["rest_url"] and access.endpoints.sapi_url == GOOD["sapi_url"]
    assert access.api_secret == GOOD["api_secret"]
    assert "sss" not in repr(access) and "kkk" not in repr(access)


def test_an_exchange_file_readable_by_others_is_refused(tmp_path):
    with pytest.raises(SecretError, match="chmod 600"):
        ExchangeAccess.load(write(tmp_path, GOOD, mode=0o644))


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
