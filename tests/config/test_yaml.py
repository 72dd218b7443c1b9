"""The YAML loader: every refusal is one `ConfigError` at FILE:LINE: FIELD, never a pydantic dump."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import BaseModel, field_validator

from controller.config import StrategyConfig, load_model, load_model_text
from controller.errors import ConfigError
from tests.support.checkout import EXAMPLES
from tests.support.yaml_bombs import alias_bomb

STRATEGY = """\
symbols:
  BTCUSDT:
    leverage: 5
  ETHUSDT:
    leverage: 3
    margin_type: ISOLATED
buckets:
  majors:
    allocation: 0.4
    symbols: [BTCUSDT, ETHUSDT]
sizing:
  order_fraction: 0.1
"""


def write(tmp_path: Path, text: str, name: str = "strategy.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def refusal(tmp_path: Path, text: str) -> ConfigError:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_model(StrategyConfig, path)
    return caught.value


def test_a_valid_file_loads_into_a_frozen_model(tmp_path):
    config = load_model(StrategyConfig, write(tmp_path, STRATEGY))
    assert config.symbols["ETHUSDT"].margin_type == "ISOLATED"
    with pytest.raises(Exception):
        config.sizing = None  # type: ignore[misc]


def test_a_yaml_float_becomes_the_exact_decimal_written():
    config = load_model_text(StrategyConfig, STRATEGY.replace("0.4", "0.1234567890123456789"), "s.yaml")
    assert config.buckets["majors"].allocation == Decimal("0.1234567890123456789")
    assert load_model_text(StrategyConfig, STRATEGY, "s.yaml").buckets["majors"].allocation == Decimal("0.4")


def test_a_yaml_syntax_error_names_its_line(tmp_path):
    error = refusal(tmp_path, STRATEGY.replace("  ETHUSDT:\n", "  ETHUSDT: [\n"))
    assert error.file == str(tmp_path / "strategy.yaml")
    assert error.line is not None and error.line >= 4
    assert "invalid YAML" in error.message


def test_a_duplicate_key_is_refused_at_its_second_occurrence(tmp_path):
    error = refusal(tmp_path, STRATEGY.replace("    leverage: 5\n", "    leverage: 5\n    leverage: 50\n"))
    assert (error.line, error.field) == (4, "symbols.BTCUSDT.leverage")
    assert "duplicate key 'leverage' (first defined on line 3)" in error.message


def test_an_empty_file_is_refused_clearly(tmp_path):
    error = refusal(tmp_path, "# nothing yet\n")
    assert "empty" in error.message


def test_a_top_level_list_is_refused_clearly(tmp_path):
    error = refusal(tmp_path, "- BTCUSDT\n")
    assert (error.line, error.message) == (1, "expected a mapping of settings at the top level, got a list")


def test_a_long_top_level_value_is_named_not_echoed(tmp_path):
    """A refusal is a message, not a dump of the input (a 70 kB scalar used to be printed whole)."""
    error = refusal(tmp_path, "x" * 70_000 + "\n")
    assert error.message == ("expected a mapping of settings at the top level, got the single value "
                             f"'{'x' * 60}'... (70000 characters)")


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_model(StrategyConfig, tmp_path / "absent.yaml")
    assert str(caught.value) == f"{tmp_path / 'absent.yaml'}: file not found"


def test_a_wrong_type_names_field_line_and_what_was_expected(tmp_path):
    error = refusal(tmp_path, STRATEGY.replace("leverage: 5", "leverage: five"))
    assert (error.line, error.field) == (3, "symbols.BTCUSDT.leverage")
    assert error.message == "expected an integer, got 'five'"


def test_an_out_of_range_value_states_the_whole_range(tmp_path):
    error = refusal(tmp_path, STRATEGY.replace("leverage: 5", "leverage: 200"))
    assert (error.line, error.field) == (3, "symbols.BTCUSDT.leverage")
    assert error.message == "expected an integer from 1 to 125, got 200"


def test_an_out_of_range_fraction_states_its_open_bound(tmp_path):
    error = refusal(tmp_path, STRATEGY.replace("order_fraction: 0.1", "order_fraction: 0"))
    assert (error.line, error.field) == (12, "sizing.order_fraction")
    assert error.message == "expected a number from 1E-9 to 1, got 0"


def test_an_unknown_field_lists_the_allowed_ones(tmp_path):
    error = refusal(tmp_path, STRATEGY.replace("    leverage: 5\n", "    leverage: 5\n    levrage: 6\n"))
    assert (error.line, error.field) == (4, "symbols.BTCUSDT.levrage")
    assert "unknown field 'levrage' (allowed: leverage, margin_type)" in str(error)


def test_a_missing_field_points_at_its_parent(tmp_path):
    error = refusal(tmp_path, STRATEGY.replace("  order_fraction: 0.1\n", "  max_open_orders_per_symbol: 3\n"))
    assert (error.line, error.field, error.message) == (11, "sizing.order_fraction", "missing required field")


def test_a_bad_choice_lists_the_choices(tmp_path):
    error = refusal(tmp_path, STRATEGY.replace("ISOLATED", "isolated"))
    assert (error.line, error.field) == (6, "symbols.ETHUSDT.margin_type")
    assert error.message == "expected 'ISOLATED' or 'CROSSED', got 'isolated'"


def test_a_bad_mapping_key_is_reported_as_a_key(tmp_path):
    error = refusal(tmp_path, STRATEGY.replace("BTCUSDT", "btcusdt", 1))
    assert (error.line, error.field) == (2, "symbols.btcusdt")
    assert error.message.startswith("invalid key: expected text matching")


def test_a_list_item_is_shown_with_its_index(tmp_path):
    error = refusal(tmp_path, STRATEGY.replace("[BTCUSDT, ETHUSDT]", "\n      - BTCUSDT\n      - eth"))
    assert (error.line, error.field) == (12, "buckets.majors.symbols[1]")


def test_every_error_is_reported_first_in_file_order_then_one_line_each(tmp_path):
    text = STRATEGY.replace("leverage: 5", "leverage: 0").replace("order_fraction: 0.1", "order_fraction: 2")
    error = refusal(tmp_path, text)
    lines = str(error).splitlines()
    path = tmp_path / "strategy.yaml"
    assert lines == [
        f"{path}:3: symbols.BTCUSDT.leverage: expected an integer from 1 to 125, got 0",
        f"{path}:12: sizing.order_fraction: expected a number from 1E-9 to 1, got 2",
    ]


def test_the_rendered_error_is_never_pydantics_dump(tmp_path):
    error = refusal(tmp_path, STRATEGY.replace("leverage: 5", "leverage: []"))
    text = str(error)
    assert text.startswith(f"{tmp_path / 'strategy.yaml'}:3: ")
    assert "validation error" not in text and "errors.pydantic.dev" not in text
    assert error.__cause__ is None and error.__suppress_context__


class Probe(BaseModel):
    """Any pydantic model loads, and its own validators' words are kept."""

    name: str

    @field_validator("name")
    @classmethod
    def _lowercase(cls, name: str) -> str:
        if name != name.lower():
            raise ValueError("name must be lower case")
        return name


def test_a_plain_models_validator_message_is_kept():
    with pytest.raises(ConfigError) as caught:
        load_model_text(Probe, "\n\nname: Loud\n", "probe.yaml")
    assert str(caught.value) == "probe.yaml:3: name: name must be lower case"


def test_text_that_yaml_reads_as_a_number_is_refused_with_the_fix():
    with pytest.raises(ConfigError) as caught:
        load_model_text(Probe, "name: 1.10\n", "probe.yaml")
    assert str(caught.value) == "probe.yaml:1: name: expected text, got the number 1.10: put it in quotes"


def test_a_control_character_is_invalid_yaml_not_a_crash():
    from controller.config.strategy import StrategyConfig

    with pytest.raises(ConfigError, match=r"^s\.yaml: invalid YAML: unacceptable character #x001f"):
        load_model_text(StrategyConfig, "symbols:\x1f", "s.yaml")


# --- bounded input: a file is read only if it is a regular file of bounded size, whose aliases and
# nesting stay within budgets; each refusal is one ConfigError at FILE:LINE, in bounded time.

def test_aliases_that_expand_past_the_node_budget_are_refused_at_their_line(tmp_path):
    error = refusal(tmp_path, "symbols: {}\n" + alias_bomb(6))  # 9**6 = 531,441 nodes once expanded
    assert "aliases expand past" in str(error)
    assert error.file == str(tmp_path / "strategy.yaml") and error.line is not None


def test_nesting_deeper_than_the_limit_is_refused_without_a_recursion_error(tmp_path):
    error = refusal(tmp_path, "symbols: " + "[" * 100_000 + "]" * 100_000 + "\n")
    assert "nested deeper than" in str(error)
    error = refusal(tmp_path, "".join(f"{'  ' * n}k{n}:\n" for n in range(300)) + "  " * 300 + "x: 1\n")
    assert "nested deeper than" in str(error)


def test_a_file_over_the_size_limit_is_refused_before_it_is_parsed(tmp_path):
    from controller.config.yamlfile import MAX_BYTES

    error = refusal(tmp_path, "symbols: {}\n#" + "x" * MAX_BYTES + "\n")
    assert f"larger than {MAX_BYTES // 1024} KiB" in str(error)


def test_only_regular_files_are_read(tmp_path):
    import os

    fifo = tmp_path / "config.fifo"
    os.mkfifo(fifo)  # opening it for reading would wait for a writer forever
    for path in (fifo, Path("/dev/zero")):
        with pytest.raises(ConfigError, match="not a regular file"):
            load_model(StrategyConfig, path)


def test_a_number_too_small_to_mean_anything_is_refused_not_recorded(tmp_path):
    error = refusal(tmp_path, STRATEGY.replace("allocation: 0.4", "allocation: 1.0e-999999999999999999"))
    assert error.line == 9 and "buckets.majors.allocation" in str(error) and "1E-9" in str(error)


def test_libyaml_and_pyyaml_read_every_shipped_and_example_file_alike():
    """The fast path (libyaml's parser under PyYAML's composer) gives the same data and lines as PyYAML alone."""
    from controller import shipped
    from controller.config import yamlfile

    assert yamlfile._FastLoader is not None  # PyYAML is built with libyaml here (its wheels are)
    files = [*shipped.policies_dir().glob("*.yaml"), *EXAMPLES.rglob("*.yaml")]
    assert len(files) > 5
    for path in files:
        text = path.read_text(encoding="utf-8")
        fast = yamlfile._compose(yamlfile._FastLoader(text), str(path), fast=True)
        slow = yamlfile._compose(yamlfile._Loader(text), str(path), fast=False)
        assert fast == slow, path
