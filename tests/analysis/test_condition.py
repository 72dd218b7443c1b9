"""Policy conditions: parsed by a grammar, evaluated with bound names, never by eval."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.analysis.condition import ConditionError, parse


@pytest.mark.parametrize("text, value, holds", [
    ("== 0", 0, True), ("== 0", 1, False), ("< 0.150", 0.149, True), ("< 0.150", 0.150, False),
    ("<= 0.150", 0.150, True), ("> 2", 3, True), (">= -1", -1, True), ("!= 5", 5, False),
    ("< 1e-3", 0.0005, True), ("< .5", 0.4, True),
])
def test_comparisons_against_numbers(text, value, holds):
    assert parse(text).holds(value) is holds


def test_thresholds_are_arithmetic_over_bound_names_with_precedence():
    condition = parse("<= allocation * 1.02 + headroom / 2")
    assert condition.names == {"allocation", "headroom"}
    assert condition.threshold({"allocation": 0.5, "headroom": 0.04}) == pytest.approx(0.53)
    assert parse("< (1 + 2) * 3").threshold() == 9
    assert parse("< -(2 - 5)").threshold() == 3
    assert parse("<= baseline.exposure * 1.1").threshold({"baseline.exposure": 10}) == pytest.approx(11)


@pytest.mark.parametrize("text, message", [
    ("0.150", "expected a comparison first"),
    ("< ", "expected a number, a name or '('"),
    ("< 1 +", "expected a number, a name or '('"),
    ("< (1 + 2", "expected ')'"),
    ("< 1 2", "expected the end of the condition"),
    ("< 1; import os", "unexpected character ';'"),
    ("< __import__('os')", "unexpected character"),
    ("=< 1", "unexpected character '=' at column 1"),
])
def test_malformed_conditions_say_what_was_expected_and_where(text, message):
    with pytest.raises(ConditionError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse(text)


def test_names_that_will_never_be_bound_are_refused_at_parse_time():
    with pytest.raises(ConditionError, match="unknown name 'alocation'.*allocation"):
        parse("<= alocation * 1.02", frozenset({"allocation"}))


def test_evaluation_errors_are_condition_errors():
    with pytest.raises(ConditionError, match="no value for 'allocation'"):
        parse("<= allocation").threshold({})
    with pytest.raises(ConditionError, match="division by zero"):
        parse("< 1 / (2 - 2)").threshold()


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("<>=!()+-*/.0123456789eE _abcxyz;'\"\\")), max_size=60))
def test_the_parser_never_raises_anything_but_its_own_error(text):
    try:
        condition = parse(text)
        condition.holds(1.0, {name: 2.0 for name in condition.names})
    except Exception as exc:  # noqa: BLE001 - any other exception is the failure this test looks for
        assert isinstance(exc, ConditionError), f"{text!r} raised {type(exc).__name__}: {exc}"
