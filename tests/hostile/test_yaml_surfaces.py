"""Every YAML surface (daemon config, strategy config, release manifest, pipeline, policy file) fed
hostile documents: arbitrary text, generated structures of wrong types, extreme numbers, deep nesting
and control characters, and mutations of the file that ships. The loader either returns its model or
raises a `ConfigError` naming the file with a message that prints no control character of the
input raw; any other exception is a defect."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from controller.analysis.policy import PolicyFile, load_policy_file
from controller.config import DaemonConfig, ReleaseManifest, StrategyConfig, load_daemon_config, load_model
from controller.errors import ConfigError
from controller.rollout.pipeline import DEFAULT_PIPELINE, Pipeline, load_pipeline
from tests.hostile.documents import mutated, spots
from tests.support.checkout import REPO

HOSTILE = settings(derandomize=True, max_examples=120, deadline=None, database=None,
                   suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                          HealthCheck.filter_too_much, HealthCheck.data_too_large])
"""Deterministic (the same examples every run), so the suite is never flaky."""


class Surface:
    """One YAML input surface: its loader, the model it returns and the valid file that ships."""

    def __init__(self, name: str, load: Callable[[Path], BaseModel], model: type[BaseModel], shipped: Path) -> None:
        self.name, self.load, self.model, self.shipped = name, load, model, shipped

    def __repr__(self) -> str:
        return self.name


SURFACES = [
    Surface("daemon config", load_daemon_config, DaemonConfig, REPO / "examples" / "controller.yaml"),
    Surface("strategy config", lambda path: load_model(StrategyConfig, path), StrategyConfig,
            REPO / "examples" / "reference-bot" / "strategy.yaml"),
    Surface("release manifest", lambda path: load_model(ReleaseManifest, path), ReleaseManifest,
            REPO / "examples" / "reference-bot" / "manifest.yaml"),
    Surface("pipeline", load_pipeline, Pipeline, DEFAULT_PIPELINE),
    Surface("policy file", load_policy_file, PolicyFile, REPO / "policies" / "stage-a.yaml"),
]


def loads_or_refuses(surface: Surface, path: Path, text: str) -> None:
    """The one outcome allowed: the model, or a ConfigError that names ``path`` and says what is wrong."""
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        loaded = surface.load(path)
    except ConfigError as refusal:
        assert refusal.file == str(path), refusal
        assert refusal.message.strip(), refusal
        assert len(str(refusal)) < 64 * 1024, "a refusal is a message, not a dump of the input"
        drawn = [ch for ch in str(refusal) if not ch.isprintable() and ch != "\n"]
        assert not drawn, f"a refusal prints {drawn!r} raw: the input could draw on the terminal"
    else:
        assert isinstance(loaded, surface.model)


# --- generated values ----------------------------------------------------------------------------

CONTROL = st.characters(min_codepoint=0, max_codepoint=0x1F) | st.sampled_from(["\x7f", "\x85", "\u2028", "\ufeff"])
YAML_TOKENS = st.sampled_from(list(":-[]{}&*!|>'\"#%@`,? \n\t.") + ["<<", "---", "...", "!!python/object", "&a", "*a"])
HOSTILE_TEXT = st.lists(CONTROL | YAML_TOKENS | st.characters(), max_size=80).map("".join)
"""Short strings of control characters, YAML syntax and anything Unicode."""

NUMBERS = (st.integers(min_value=-(10**40), max_value=10**40)
           | st.sampled_from([0, -1, 2**63, -(2**63) - 1, 10**400])
           | st.floats(allow_nan=True, allow_infinity=True)
           | st.sampled_from([math.nan, math.inf, -math.inf, 5e-324, 1.7976931348623157e308]))
SCALARS = (st.none() | st.booleans() | NUMBERS | HOSTILE_TEXT
           | st.sampled_from(["x" * 70_000, "1.0e-999999999999999999", "1e999999999", "-.inf", ".nan",
                              "0x7fffffffffffffff", "99999999999d", "1:30:00", "~", "yes", "2026-12-06"]))

FIELD_NAMES = sorted({name for surface in SURFACES for name in surface.model.model_fields}
                     | {"symbols", "buckets", "stages", "policies", "accounts", "kind", "name", "window",
                        "condition", "allocation", "duration", "artifact", "path", "env", "metric"})
KEYS = st.sampled_from(FIELD_NAMES) | HOSTILE_TEXT


def deep(depth: int, kind: str) -> Any:
    """``depth`` nested lists or mappings: the shape that blows a recursive composer's stack."""
    value: Any = "leaf"
    for _ in range(depth):
        value = [value] if kind == "list" else {"k": value}
    return value


VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=4),
                      max_leaves=20)
DEEP = st.builds(deep, st.integers(min_value=1, max_value=300), st.sampled_from(["list", "map"]))
DOCUMENTS = st.dictionaries(KEYS, VALUES | DEEP, max_size=6) | VALUES


def dumped(value: Any) -> str:
    # allow_unicode=False: every control character is written as an escape the reader accepts.
    return yaml.safe_dump(value, allow_unicode=False, width=10**6, sort_keys=False)


# --- mutations of the shipped file -----------------------------------------------------------------


# --- the properties --------------------------------------------------------------------------------


@pytest.mark.parametrize("surface", SURFACES, ids=repr)
def test_the_shipped_file_loads(surface):
    assert isinstance(surface.load(surface.shipped), surface.model)


@pytest.mark.parametrize("surface", SURFACES, ids=repr)
@HOSTILE
@given(text=st.lists(CONTROL | YAML_TOKENS | st.characters(), max_size=400).map("".join))
def test_arbitrary_text_is_loaded_or_refused_with_its_file(tmp_path, surface, text):
    loads_or_refuses(surface, tmp_path / "input.yaml", text)


@pytest.mark.parametrize("surface", SURFACES, ids=repr)
@HOSTILE
@given(document=DOCUMENTS)
def test_generated_structures_are_loaded_or_refused_with_their_file(tmp_path, surface, document):
    loads_or_refuses(surface, tmp_path / "input.yaml", dumped(document))


@pytest.mark.parametrize("surface", SURFACES, ids=repr)
@settings(HOSTILE, max_examples=60)
@given(data=st.data())
def test_mutations_of_the_shipped_file_are_loaded_or_refused_with_their_file(tmp_path, surface, data):
    document = yaml.safe_load(surface.shipped.read_text())
    path = data.draw(st.sampled_from(spots(document)), label="path")
    action = data.draw(st.sampled_from(["drop", "replace"]), label="action")
    replacement = data.draw(VALUES | DEEP, label="replacement") if action == "replace" else None
    loads_or_refuses(surface, tmp_path / "input.yaml", dumped(mutated(document, path, replacement, drop=action == "drop")))


EXTREMES = ["1.0e-999999999999999999", "1e999999999", "-1e999999999", "1e-400", ".nan", ".inf", "-.inf",
            "99999999999999999999999999999999999999", "0x7fffffffffffffff", "0b" + "1" * 4000]


@pytest.mark.parametrize("surface", SURFACES, ids=repr)
def test_every_number_of_the_shipped_file_replaced_by_an_extreme_is_loaded_or_refused(tmp_path, surface):
    """Each numeric value, in turn, written as each extreme spelling (YAML text, not a dumped float):
    an exponent of a billion must not become a billion-digit integer."""
    text = surface.shipped.read_text()
    document = yaml.safe_load(text)
    numeric = [path for path in spots(document) if _number_at(document, path)]
    assert numeric or surface.name in {"release manifest", "policy file"}
    for path in numeric:
        for extreme in EXTREMES:
            marker = "__EXTREME__"
            written = dumped(mutated(document, path, marker)).replace(f"'{marker}'", extreme)
            written = written.replace(marker, extreme)
            loads_or_refuses(surface, tmp_path / "input.yaml", written)


def _number_at(document: Any, path: tuple) -> bool:
    value = document
    for step in path:
        value = value[step]
    return isinstance(value, (int, float)) and not isinstance(value, bool)
