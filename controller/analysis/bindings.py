"""What a threshold's names mean for one group of one release: the values conditions bind.

``allocation`` is the group's bucket allocation (or its symbol's bucket's), ``leverage`` the
group's symbol's configured leverage, both from the release's config snapshot; ``capital_cap``
is the stage's cap; ``baseline`` is the same policy's value on the baseline release, measured
over the same window on the same market. A name that has no value for a group leaves the
verdict inconclusive, never passing.
"""

from __future__ import annotations

from collections.abc import Mapping

from controller.analysis.evaluator import Bindings, Evaluator
from controller.analysis.observation import Labels
from controller.analysis.policy import Policy
from controller.config.strategy import StrategyConfig


def release_bindings(config: StrategyConfig, *, capital_cap: float | None = None,
                     baseline: Evaluator | None = None) -> Bindings:
    def bind(policy: Policy, group: Labels, now: float) -> Mapping[str, float]:
        labels = dict(group)
        values: dict[str, float] = {}
        symbol, bucket = labels.get("symbol"), labels.get("bucket")
        if symbol in config.symbols:
            values["leverage"] = float(config.symbols[symbol].leverage)
            bucket = bucket or config.bucket_of(symbol)
        if bucket in config.buckets:
            values["allocation"] = float(config.buckets[bucket].allocation)
        if capital_cap is not None:
            values["capital_cap"] = capital_cap
        if baseline is not None and "baseline" in policy.parsed_condition.names:  # measured only where named
            measured = baseline.value(policy.name, group, now)
            if measured is not None:
                values["baseline"] = measured
        return values

    return bind
