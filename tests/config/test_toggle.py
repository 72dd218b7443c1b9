"""A manifest's feature toggle: a dotted path to a boolean in the strategy config, set by path in a
copy of the config, and refused at `release add` (file, line, field; exit 2) where it names nothing."""

from __future__ import annotations

import pytest

from controller.config.manifest import ReleaseManifest, Toggle
from controller.config.yamlfile import load_model_text
from controller.errors import ConfigError
from controller.release_files import read_release
from tests.support.canaryctl import assert_refused, canaryctl
from tests.support.checkout import EXAMPLES

MANIFEST = EXAMPLES / "reference-bot" / "manifest.yaml"
CONFIG = EXAMPLES / "reference-bot" / "strategy.yaml"
NESTED = {"sizing": {"order_fraction": "0.1"}, "bot": {"features": {"new_sizing": False, "other": True}}}


def test_setting_a_nested_key_changes_that_key_only_and_leaves_the_config_given_untouched():
    toggle = Toggle(config_key="bot.features.new_sizing")

    switched = toggle.switched(NESTED, True)

    assert switched == {"sizing": {"order_fraction": "0.1"}, "bot": {"features": {"new_sizing": True, "other": True}}}
    assert NESTED["bot"]["features"]["new_sizing"] is False
    assert toggle.switched(switched, False) == NESTED


@pytest.mark.parametrize(("key", "says"), [
    ("bot.features.old_sizing", "bot.features.old_sizing is not in the release's strategy config (no 'old_sizing' "
                                "under bot.features)"),
    ("features.new_sizing", "no 'features' under the top level"),
    ("sizing.order_fraction.deeper", "no 'deeper' under sizing.order_fraction"),
    ("sizing.order_fraction", "sizing.order_fraction is '0.1' in the release's strategy config: a toggle needs a "
                              "boolean there"),
    ("bot.features", "a toggle needs a boolean there"),
])
def test_a_path_that_is_missing_or_not_a_boolean_is_refused(key, says):
    toggle = Toggle(config_key=key)

    assert says in toggle.problem(NESTED)
    with pytest.raises(ConfigError) as refused:
        toggle.switched(NESTED, True)
    assert refused.value.field == "toggle.config_key" and says in refused.value.message


def test_a_config_key_that_is_not_a_dotted_path_is_refused_at_its_line():
    text = MANIFEST.read_text() + "toggle:\n  config_key: bot..new_sizing\n"
    with pytest.raises(ConfigError) as refused:
        load_model_text(ReleaseManifest, text, "manifest.yaml")
    assert refused.value.field == "toggle.config_key"
    assert refused.value.line == len(text.splitlines())


def _manifest_with(tmp_path, key: str):
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(MANIFEST.read_text() + f"toggle:\n  config_key: {key}\n")
    return manifest


def test_release_add_refuses_a_toggle_the_config_does_not_have_with_file_line_and_field(sqlite_url, tmp_path):
    assert canaryctl("db", "upgrade", db=sqlite_url).code == 0
    manifest = _manifest_with(tmp_path, "bot.stream_prices")  # the reference bot's, but this config omits it
    line = len(manifest.read_text().splitlines())

    refused = canaryctl("release", "add", "2.0.0", "--manifest", str(manifest), "--config", str(CONFIG),
                        db=sqlite_url)

    assert_refused(refused, f"{manifest}:{line}: toggle.config_key: bot.stream_prices is not in the release's "
                            "strategy config (no 'stream_prices' under bot)", f"(in {CONFIG})")
    assert canaryctl("release", "list", "--json", db=sqlite_url).out == ""


def test_release_add_records_a_toggle_the_config_has(sqlite_url, tmp_path):
    assert canaryctl("db", "upgrade", db=sqlite_url).code == 0
    config = tmp_path / "strategy.yaml"
    config.write_text(CONFIG.read_text() + "\nbot:\n  stream_prices: false\n")

    added = canaryctl("release", "add", "2.0.0", "--manifest", str(_manifest_with(tmp_path, "bot.stream_prices")),
                      "--config", str(config), db=sqlite_url)

    assert added.code == 0, added


def test_a_manifest_without_a_toggle_records_no_toggle_key_so_its_digest_is_unchanged():
    assert "toggle" not in read_release("1.0.0", MANIFEST, CONFIG).manifest


@pytest.mark.parametrize("toggle", ["toggle:\n  config_key: bot.new_sizing\n  endpoint: /toggle/new_sizing\n",
                                    "toggle: {}\n"])
def test_a_toggle_needs_exactly_one_of_config_key_and_endpoint(toggle):
    text = MANIFEST.read_text() + toggle
    with pytest.raises(ConfigError) as refused:
        load_model_text(ReleaseManifest, text, "manifest.yaml")
    assert refused.value.field == "toggle"
    assert refused.value.file == "manifest.yaml"
    assert "give exactly one of config_key" in refused.value.message and "endpoint" in refused.value.message


def test_an_endpoint_that_is_not_a_path_is_refused_at_its_line():
    text = MANIFEST.read_text() + "toggle:\n  endpoint: http://elsewhere/toggle\n"
    with pytest.raises(ConfigError) as refused:
        load_model_text(ReleaseManifest, text, "manifest.yaml")
    assert (refused.value.field, refused.value.line) == ("toggle.endpoint", len(text.splitlines()))


def test_a_release_records_the_endpoint_form_alone_and_it_asks_nothing_of_the_config(tmp_path):
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(MANIFEST.read_text() + "toggle:\n  endpoint: /toggle/new_sizing\n")

    assert read_release("2.0.0", manifest, CONFIG).manifest["toggle"] == {"endpoint": "/toggle/new_sizing"}
