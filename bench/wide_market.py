"""A simulated market and a reference-bot strategy of any number of symbols, for the benchmarks.

The simulator lists Binance's 21 most traded perpetuals; a stage of 50 or 100 symbols needs more.
The extra symbols copy those rules (tick, step, brackets, price) under new names (``BTC2USDT``...),
and the strategy gives them the reference bot's leverage and margin types in its two buckets.
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial

from controller.config.strategy import StrategyConfig
from controller.harness.release import REFERENCE_STRATEGY, load_strategy
from controller.sim.market import SYMBOLS, SymbolSpec
from controller.sim.server import Simulator


def symbol_specs(count: int) -> tuple[SymbolSpec, ...]:
    """``count`` symbols: the simulator's own first, then copies of them renamed."""
    specs = list(SYMBOLS[:count])
    copy = 2
    while len(specs) < count:
        for spec in SYMBOLS[:count - len(specs)]:
            base = f"{spec.base}{copy}"
            specs.append(replace(spec, symbol=f"{base}USDT", base=base))
        copy += 1
    return tuple(specs)


def strategy(count: int) -> StrategyConfig:
    """The reference bot's strategy over ``count`` symbols: the first two of every five in its
    ``majors`` bucket, the rest in ``alts``, each with the settings of its place in the five."""
    reference = load_strategy(REFERENCE_STRATEGY)
    templates = list(reference.symbols.values())
    data = reference.model_dump(mode="json")
    data["symbols"], majors, alts = {}, [], []
    for n, spec in enumerate(symbol_specs(count)):
        data["symbols"][spec.symbol] = templates[n % len(templates)].model_dump(mode="json")
        (majors if n % len(templates) < 2 else alts).append(spec.symbol)
    data["buckets"]["majors"]["symbols"] = majors
    data["buckets"]["alts"]["symbols"] = alts
    return StrategyConfig.model_validate(data)


def simulator(count: int):
    """A `Simulator` factory (as the harness takes one) whose market lists ``count`` symbols."""
    return partial(Simulator, symbols=symbol_specs(count))
