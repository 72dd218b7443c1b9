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
        failure_limit: {failures: 3, evaluations: 10}   # act on the 3rd failure of the last 10
        consecutive_error_limit: 5  # 5 nodata evaluations in a row: the rollout pauses for a person
        inconclusive_limit: 5       # 5 inconclusive evaluations in a row: the rollout pauses
        dry_run: false              # true: judged, stored and shown, "would have ...", never acted on

An evaluation is one verdict of the policy as the rollout's decision receives it (each tick, and
each observation an instant policy is judged on); verdicts of one instant count once, the worst.
The limits are those of Argo Rollouts' AnalysisTemplate, counted the way a person reads them:
``failures: N`` acts on the N-th failure (Argo's ``failureLimit: N-1``); without a
``failure_limit`` the first failure acts, as ``{failures: 1, evaluations: 1}`` would.

Loading goes through `controller.config.yamlfile`, so every refusal names the file, the line,
the field and what was expected; `load_policy_file` adds the policy's name. What could not be
judged is refused at load, by `canaryctl policy check` and the daemon alike: a constant
threshold that divides by zero or is not finite, a duration that is not finite or longer than
`MAX_DURATION`, an aggregate that does not suit what the source's metric is (`METRIC_KINDS`).
"""

from __future__ import annotations

import math
import re
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BeforeValidator, Field, StringConstraints, field_validator, model_validator

from controller.analysis.condition import Condition, ConditionError
from controller.analysis.condition import parse as parse_condition
from controller.config.model import ConfigModel, Int, error_at
from controller.config.yamlfile import load_model, read_text
from controller.errors import ConfigError
from controller.timespec import parse_duration

Source = Literal["bot", "exchange", "logs", "process", "audit"]
Aggregate = Literal["last", "min", "max", "mean", "sum", "count", "increase", "rate",
                    "p50", "p90", "p95", "p99", "ratio", "age", "mann_whitney", "growth_vs_baseline"]

MetricKind = Literal["gauge", "counter", "event"]
# What each non-bot source observes (controller/observe/ produces exactly these names), and what
# each is: a gauge (a state read now and then), a counter (a running total) or an event (one
# sample per thing that happened, of its own value). The bot's metrics are the bot's to name.
METRIC_KINDS: dict[str, dict[str, MetricKind]] = {
    "exchange": {
        "leverage_applied": "gauge", "leverage_mismatch": "gauge", "margin_type_mismatch": "gauge",
        "fill_leverage_mismatch": "event", "fill_notional_ratio": "event", "exposure_ratio": "gauge",
        "exposure_total_ratio": "gauge", "margin_ratio": "gauge", "margin_calls": "event",
        "order_outcomes": "counter", "capital_share": "gauge", "pnl_ratio": "gauge", "stream_connected": "gauge",
        "equity_share": "gauge",
        "foreign_activity": "event", "liquidations": "event", "isolated_margin_ratio": "gauge",
        "account_mode_mismatch": "gauge", "witness_fill_divergence": "gauge", "witness_leverage_divergence": "gauge",
        "witness_bucket_usage_understated": "gauge", "own_orders_filled": "counter", "prior_orders_filled": "counter",
        "orders_placed": "counter", "account_fills": "counter",
    },
    "logs": {"unhandled_exceptions": "event", "error_records": "event"},
    "process": {"up": "gauge", "restarts": "counter"},
    "audit": {"chain_ok": "gauge"},
}
SOURCE_METRICS: dict[str, frozenset[str]] = {source: frozenset(kinds) for source, kinds in METRIC_KINDS.items()}
# The aggregates that mean something for each kind (increase and rate of a gauge, or the sum of a
# counter's running totals, are numbers that judge nothing), and why the others do not.
SUITED: dict[MetricKind, frozenset[str]] = {
    "gauge": frozenset({"last", "min", "max", "mean", "count", "p50", "p90", "p95", "p99", "mann_whitney",
                        "growth_vs_baseline"}),
    "event": frozenset({"last", "min", "max", "mean", "sum", "count", "p50", "p90", "p95", "p99", "mann_whitney"}),
    "counter": frozenset({"last", "min", "max", "count", "increase", "rate", "ratio"}),
}
_WHY_UNSUITED = {
    "increase": "needs a counter", "rate": "needs a counter", "ratio": "needs a counter",
    "sum": "adds up events", "age": "needs a timestamp", "mean": "averages values, not a running total",
    "p50": "needs values, not a running total", "p90": "needs values, not a running total",
    "p95": "needs values, not a running total", "p99": "needs values, not a running total",
    "mann_whitney": "needs values, not a running total", "growth_vs_baseline": "needs a level (a gauge)",
}
MAX_LIMIT = 10_000
"""The largest count a limit may name: the decision state keeps that many evaluations per policy."""
MAX_DURATION = 30 * 86400.0
"""The longest window, ``for`` and ``stale_after``: a stage's evidence, not a lifetime's."""
# Names a threshold may use; the evaluator binds them from the release's config snapshot,
# the stage and the baseline release.
THRESHOLD_NAMES = frozenset({"allocation", "leverage", "capital_cap", "baseline"})
_METRIC = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")


def _duration(value: object) -> float:
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 90s, 15m, 48h")
    if isinstance(value, int | float | Decimal):
        return _bounded(float(value))
    if not isinstance(value, str):
        raise ValueError("expected a duration such as 90s, 15m, 48h")
    return _bounded(parse_duration(value))


def _bounded(seconds: float) -> float:
    if not math.isfinite(seconds):
        raise ValueError(f"expected a finite duration such as 90s, 15m, 48h, got {seconds}")
    if seconds > MAX_DURATION:
        raise ValueError(f"expected a duration of at most 30 days ({MAX_DURATION:.0f} s), got {seconds:g} s")
    return seconds


Duration = Annotated[float, BeforeValidator(_duration), Field(ge=0)]
PolicyName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")]


class OnNodata(ConfigModel):
    """What missing data means: never a silent pass."""

    action: Literal["hold", "rollback", "ignore"] = "hold"
    stale_after: Duration = Field(default=120.0, gt=0)


Limit = Annotated[Int, Field(ge=1, le=MAX_LIMIT)]


class FailureLimit(ConfigModel):
    """Act on a breach only once the policy has failed ``failures`` times within its last ``evaluations``."""

    failures: Limit
    evaluations: Limit

    @model_validator(mode="after")
    def _fits(self) -> FailureLimit:
        if self.evaluations < self.failures:
            raise error_at(("evaluations",), f"{self.failures} failures cannot happen within {self.evaluations} "
                                             "evaluations: evaluations must be at least failures")
        return self


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
    failure_limit: FailureLimit | None = None
    """Failures tolerated before the breach is acted on (None: the first failure acts)."""
    consecutive_error_limit: Limit | None = None
    """Nodata evaluations in a row after which the rollout pauses for a person (None: never)."""
    inconclusive_limit: Limit | None = None
    """Inconclusive evaluations in a row after which the rollout pauses for a person (None: never)."""
    dry_run: bool = False
    """Judged, stored, shown and reported as what it would have done, never acted on (nor gating)."""

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
        kind = METRIC_KINDS.get(self.source, {}).get(self.metric)
        if kind is not None and self.aggregate not in SUITED[kind]:
            article = "an" if kind == "event" else "a"
            raise error_at(("aggregate",), f"{self.aggregate} {_WHY_UNSUITED[self.aggregate]}; the {self.source} "
                                           f"source's {self.metric} is {article} {kind} (aggregates that suit it: "
                                           f"{', '.join(sorted(SUITED[kind]))})")
        if self.aggregate == "ratio" and not self.numerator:
            raise error_at(("numerator",), "aggregate: ratio needs a numerator (the labels of the series "
                                           "counted over all), e.g. {outcome: [rejected, error]}")
        if self.aggregate != "ratio" and self.numerator:
            raise error_at(("numerator",), "a numerator only goes with aggregate: ratio")
        if self.for_ > self.window:
            raise error_at(("for",), "a breach cannot need to last longer than the window")
        if self.consecutive_error_limit is not None and self.on_nodata.action == "rollback":
            raise error_at(("consecutive_error_limit",), "on_nodata: rollback rolls back on the first nodata "
                                                         "evaluation, so a limit on them would never be reached; "
                                                         "use on_nodata: hold with the limit, or drop the limit")
        return self

    @property
    def limited(self) -> bool:
        """Whether the rollout's decision counts this policy's evaluations (a limit, or a dry run)."""
        return (self.failure_limit is not None or self.consecutive_error_limit is not None
                or self.inconclusive_limit is not None or self.dry_run)

    def describe_limits(self) -> str:
        """The limits in one line, as `canaryctl policy check` shows them (empty: none)."""
        parts = []
        if self.failure_limit is not None:
            parts.append(f"acts on {self.failure_limit.failures} failures within {self.failure_limit.evaluations} "
                         "evaluations")
        if self.consecutive_error_limit is not None:
            parts.append(f"pauses after {self.consecutive_error_limit} nodata in a row")
        if self.inconclusive_limit is not None:
            parts.append(f"pauses after {self.inconclusive_limit} inconclusive in a row")
        if self.dry_run:
            parts.append("dry run (never acted on)")
        return "; ".join(parts)

    @property
    def parsed_condition(self) -> Condition:
        return _parsed(self.condition)

    @property
    def instant(self) -> bool:
        return self.for_ == 0


@lru_cache(maxsize=1024)
def _parsed(condition: str) -> Condition:
    """A condition parsed once (a `Condition` is immutable): it is asked whenever a threshold is bound."""
    return parse_condition(condition, THRESHOLD_NAMES)


class PolicyFile(ConfigModel):
    stage: Annotated[str, StringConstraints(pattern=r"^[A-Z]$")]
    title: str | None = None
    mode: Literal["trade", "shadow"] = "trade"
    """``shadow``: the policies of the stage's shadow run (a pipeline stage with ``mode: shadow``),
    kept apart from the stage's own (the harness judges a stage by its ``trade`` file)."""
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
    """The file's policies, validated in full; a refusal names the file, line, field and policy."""
    try:
        return load_model(PolicyFile, path)
    except ConfigError as exc:
        raise _naming_the_policy(exc, path) from None


_POLICY_FIELD = re.compile(r"(?:^|: )policies\[(\d+)\]")


def _naming_the_policy(error: ConfigError, path: Path) -> ConfigError:
    """``error`` with, on each of its lines, the name of the policy that line's field is in."""
    if _POLICY_FIELD.match(error.field or "") is None:
        return error
    try:  # the file parsed before it was refused, so this only fails if it changed since
        entries = yaml.safe_load(read_text(path))["policies"]  # bounded: the file passed the loader's limits
        names = [entry.get("name") if isinstance(entry, dict) else None for entry in entries]
    except (ConfigError, yaml.YAMLError, LookupError, TypeError, RecursionError):
        return error

    def named(line: str, field: str) -> str:
        found = _POLICY_FIELD.search(field)
        index = int(found.group(1)) if found else -1
        name = names[index] if 0 <= index < len(names) else None
        return f"{line} (policy {name!r})" if isinstance(name, str) else line

    first, *rest = error.message.split("\n")
    message = "\n".join([named(first, error.field or ""), *(named(line, line) for line in rest)])
    return ConfigError(message, file=error.file, line=error.line, field=error.field)


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
