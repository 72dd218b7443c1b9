"""Secret references: only where a secret lives is configured, and the value never leaks."""

from __future__ import annotations

import pytest

from controller.config import AccountConfig, SecretError, SecretRef, load_model_text
from controller.errors import ConfigError, InputError

LITERAL = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A"


def account_yaml(api_key: str) -> str:
    return f"role: master\napi_key: {api_key}\napi_secret: env:BINANCE_SECRET\n"


def refusal(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_model_text(AccountConfig, text, "controller.yaml")
    return caught.value


def secret_file(tmp_path, mode: int, content: str = "s3cret-value\n"):
    path = tmp_path / "api-key"
    path.write_text(content)
    path.chmod(mode)
    return path


def test_a_literal_secret_is_refused_without_being_repeated():
    error = refusal(account_yaml(LITERAL))
    assert (error.line, error.field) == (2, "api_key")
    assert error.message == "secrets are never stored in config files: use file:/path or env:NAME"
    assert LITERAL not in str(error)


def test_a_relative_secret_file_is_refused():
    error = refusal(account_yaml("file:credentials/api-key"))
    assert (error.line, error.field) == (2, "api_key")
    assert "must be absolute" in error.message


def test_references_parse_into_scheme_and_target():
    account = load_model_text(AccountConfig, account_yaml("file:/run/credentials/x/key"), "c.yaml")
    assert account.api_key == SecretRef("file", "/run/credentials/x/key")
    assert account.api_secret == SecretRef("env", "BINANCE_SECRET")


def test_a_file_secret_resolves_without_its_trailing_newline(tmp_path):
    path = secret_file(tmp_path, 0o600)
    assert SecretRef.parse(f"file:{path}").resolve() == "s3cret-value"


def test_a_group_readable_secret_file_is_refused_with_the_fix(tmp_path):
    path = secret_file(tmp_path, 0o640)
    with pytest.raises(SecretError) as caught:
        SecretRef.parse(f"file:{path}").resolve()
    assert "mode 0640" in str(caught.value)
    assert f"chmod 600 {path}" in str(caught.value)
    assert "s3cret-value" not in str(caught.value)


def test_a_missing_secret_file_is_named(tmp_path):
    with pytest.raises(SecretError, match="does not exist"):
        SecretRef.parse(f"file:{tmp_path / 'absent'}").resolve()


def test_an_env_secret_resolves_from_the_environment(monkeypatch):
    monkeypatch.setenv("CANARY_TEST_SECRET", "from-env")
    assert SecretRef.parse("env:CANARY_TEST_SECRET").resolve() == "from-env"


def test_a_missing_env_var_is_a_clear_input_error(monkeypatch):
    monkeypatch.delenv("CANARY_TEST_SECRET", raising=False)
    with pytest.raises(SecretError) as caught:
        SecretRef.parse("env:CANARY_TEST_SECRET").resolve()
    assert isinstance(caught.value, InputError)
    assert str(caught.value) == "secret env:CANARY_TEST_SECRET: environment variable CANARY_TEST_SECRET is not set"


def test_the_secret_value_is_not_in_repr_or_str_of_the_reference_or_its_model(tmp_path):
    path = secret_file(tmp_path, 0o600)
    account = load_model_text(AccountConfig, account_yaml(f"file:{path}"), "c.yaml")
    assert account.api_key.resolve() == "s3cret-value"
    for text in (repr(account.api_key), str(account.api_key), repr(account), str(account),
                 account.model_dump_json()):
        assert "s3cret-value" not in text
    assert repr(account.api_key) == f"SecretRef('file:{path}')"
