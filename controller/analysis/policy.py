"""Policy files: the stabilization checklist as data. The schema here is their documentation.

A file holds the policies of one stage:

    stage: A
    policies:
      - name: leverage-mismatch-stays-zero
        checklist: "A: strategy_leverage_mismatch_total remains 0 across >=24 h sandbox run"
        source: bot                 # bot | exchange | logs | process | audit
        metric: strategy_leverage_mismatch_total
        aggregate: increase         # what the window's samples are reduced to (age: now minus
                                    # the newest sample's value, for timestamps; mann_whitney:
                                    # P(canary sample > baseline sample) when the rank test finds
                                    # the difference significant, 0.5 when it does not)
        window: 24h
        condition: "== 0"           # the value passes when it satisfies this
        min_samples: 1              # fewer samples: inconclusive
        for: 0s                     # a breach must last this long (0 or absent: instant)
        on_breach: rollback         # rollback | hold | alert
        on_nodata: {action: hold, stale_after: 2m}
        severity: critical

Loading goes through `controller.config.yamlfile`, so every refusal names the file, the line,
the field and what was expected.
"""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, StringConstraints, field_validator, model_validator

from controller.analysis.condition import Condition, ConditionError
from controller.analysis.condition import parse as parse_condition
from controller.config.model import ConfigModel, Int, error_at
from controller.config.yamlfile import load_model
from controller.errors import ConfigError
from controller.timespec import parse_duration

Source = Literal["bot", "exchange", "logs", "process", "audit"]
Aggregate = Literal["last", "min", "max", "mean", "sum", "count", "increase", "rate",
                    "p50", "p90", "p95", "p99", "ratio", "age", "mann_whitney"]

# What each non-bot source observes (controller/observe/ produces exactly these names).
SOURCE_METRICS: dict[str, frozenset[str]] = {
    "exchange": frozenset({
        "leverage_applied", "leverage_mismatch", "margin_type_mismatch", "fill_leverage_mismatch",
        "fill_notional_ratio", "exposure_ratio", "exposure_total_ratio", "margin_ratio", "margin_calls",
        "order_outcomes", "capital_share", "pnl_ratio", "stream_connected",
    }),
    "logs": frozenset({"unhandled_exceptions", "error_records"}),
    "process": frozenset({"up", "restarts"}),
    "audit": frozenset({"chain_ok"}),
}
# Names a threshold may use; the evaluator binds them from the release's config snapshot,
# the stage and the baseline release.
THRESHOLD_NAMES = frozenset({"allocation", "leverage", "capital_cap", "baseline"})
_METRIC = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")


def _duration(value: object) -> float:
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 90s, 15m, 48h")
    if isinstance(value, int | float | Decimal):
        return float(value)
    if not isinstance(value, str):
        raise ValueError("expected a duration such as 90s, 15m, 48h")
    return parse_duration(value)


Duration = Annotated[float, BeforeValidator(_duration), Field(ge=0)]
PolicyName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")]


class OnNodata(ConfigModel):
    """What missing data means: never a silent pass."""

    action: Literal["hold", "rollback", "ignore"] = "hold"
    stale_after: Duration = Field(default=120.0, gt=0)


class Policy(ConfigModel):
    name: PolicyName
    checklist: str = Field(min_length=3)
    source: Source
    metric: str
    labels: dict[str, str | list[str]] = Field(default_factory=dict)
    """Only series whose labels match (a value, or any of a list)."""
    numerator: dict[str, str | list[str]] | None = None
    """For ``aggregate: ratio``: the matching series' increase over all series' increase."""
    per: list[str] = Field(default_factory=list)
    """Evaluate each group of these labels on its own (e.g. [symbol]); the worst group decides."""
    aggregate: Aggregate
    window: Duration = Field(gt=0)
    condition: str
    min_samples: Int = Field(default=1, ge=0)
    for_: Duration = Field(default=0.0, alias="for")
    on_breach: Literal["rollback", "hold", "alert"]
    on_nodata: OnNodata = Field(default_factory=OnNodata)
    severity: Literal["critical", "warning", "info"] = "critical"
    gate: bool = True
    """Whether the stage's gate needs this policy passing over the whole stage."""

    @field_validator("condition")
    @classmethod
    def _parses(cls, text: str) -> str:
        try:
            parse_condition(text, THRESHOLD_NAMES)
        except ConditionError as exc:
            raise ValueError(str(exc)) from None
        return text

    @model_validator(mode="after")
    def _consistent(self) -> Policy:
        known = SOURCE_METRICS.get(self.source)
        if known is not None and self.metric not in known:
            raise error_at(("metric",), f"the {self.source} source has no metric {self.metric!r} "
                                        f"(it has: {', '.join(sorted(known))})")
        if known is None and not _METRIC.match(self.metric):
            raise error_at(("metric",), f"{self.metric!r} is not a Prometheus metric name")
        if self.aggregate == "ratio" and not self.numerator:
            raise error_at(("numerator",), "aggregate: ratio needs a numerator (the labels of the series "
                                           "counted over all), e.g. {outcome: [rejected, error]}")
        if self.aggregate != "ratio" and self.numerator:
            raise error_at(("numerator",), "a numerator only goes with aggregate: ratio")
        if self.for_ > self.window:
            raise error_at(("for",), "a breach cannot need to last longer than the window")
        return self

    @property
    def parsed_condition(self) -> Condition:
        return parse_condition(self.condition, THRESHOLD_NAMES)

    @property
    def instant(self) -> bool:
        return self.for_ == 0


class PolicyFile(ConfigModel):
    stage: Annotated[str, StringConstraints(pattern=r"^[A-Z]$")]
    title: str | None = None
    policies: list[Policy] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> PolicyFile:
        seen: set[str] = set()
        for index, policy in enumerate(self.policies):
            if policy.name in seen:
                raise error_at(("policies", index, "name"), f"policy name {policy.name!r} is used twice in this file")
            seen.add(policy.name)
        return self


def load_policy_file(path: Path) -> PolicyFile:
    return load_model(PolicyFile, path)


def load_policies(paths: list[Path]) -> dict[str, PolicyFile]:
    """Load every file (folders: their *.yaml); a policy name is unique across all of them."""
    files: dict[str, PolicyFile] = {}
    owners: dict[str, Path] = {}
    for path in _expand(paths):
        loaded = load_policy_file(path)
        for policy in loaded.policies:
            if policy.name in owners:
                raise ConfigError(f"policy name {policy.name!r} is also used in {owners[policy.name]}",
                                  file=str(path), field="policies.name")
            owners[policy.name] = path
        files[str(path)] = loaded
    return files


def _expand(paths: list[Path]) -> list[Path]:
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(path.glob("*.yaml"))
            if not found:
                raise ConfigError("no *.yaml policy files in this folder", file=str(path))
            out.extend(found)
        else:
            out.append(path)
    return out
