"""The harness's fault schedule: what goes wrong, when, and which policy must catch it.

A schedule is a comma-separated list of items (``--faults``), or the path of a YAML file that
holds a list of the same items (one per line, so an error names its line)::

    ITEM    := AT ":" KIND "=" NAME ["=" VALUE] (":" OPTION)*
    AT      := when, counted from the start of the run: 90s, 30m, 2h, 1d12h
    KIND    := defect | sim
    OPTION  := for=DURATION | expect=POLICY | expect=none | SYMBOL=LEVERAGE (wrong_leverage)

    2h:defect=wrong_leverage:SOLUSDT=20, 10h:sim=ws_disconnect, 30h:sim=latency_ms=200:for=1h

A ``defect`` places, at AT, a release of the reference bot carrying that defect in its strategy's
``bot: defects:`` (the bot restarts with it, as a release would; the bot's own schema has the
last word on it when it starts). A
``sim`` fault turns one of the simulator's knobs on the release's account, for ``for`` (until
the end of the run if absent; ws_disconnect and listen_key_expired happen once).

Expectations: a defect must be caught by a policy of the stage that watches what it moves
(`WATCHED`); ``expect=POLICY`` names the one policy that must catch it instead. A sim fault is
the environment misbehaving: by default the release must ride it out with no breach;
``expect=POLICY`` says that policy must catch it. ``expect=none`` means: no breach expected.
Parsing is pure and refuses anything it cannot honour, naming the item and what is wrong.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from controller.analysis.policy import Policy
from controller.config.strategy import StrategyConfig
from controller.errors import InputError
from controller.timespec import parse_duration


# The simulator's knobs a schedule can turn, and the value each takes.
INSTANT = frozenset({"ws_disconnect", "listen_key_expired"})
AFTERMATH = 600.0  # seconds after an instant fault during which a breach is put down to it
SIM_FAULTS: dict[str, str | None] = {  # name -> what its value is (None: it takes none)
    "ws_disconnect": None,
    "listen_key_expired": None,
    "ws_stall": None,
    "latency_ms": "milliseconds added to every REST answer (0 < MS <= 10000)",
    "error_rate": "share of REST requests answered with HTTP 500 / -1001 (0 < SHARE <= 1)",
    "rate_limit_storm": "how long every REST request is answered with 429 (a duration)",
    "duplicate_events": "extra copies of each user-data event (1 to 10)",
    "reorder_events": None,
    "ignore_leverage": None,
}

# What each defect moves, as (source, metric); "*": every metric of the source (a crashed bot's
# /metrics goes away). A policy of the stage that reads one of these is expected to catch it.
WATCHED: dict[str, frozenset[tuple[str, str]]] = {
    "wrong_leverage": frozenset({("bot", "strategy_leverage_applied"), ("bot", "strategy_leverage_mismatch_total"),
                                 ("exchange", "leverage_mismatch"), ("exchange", "fill_leverage_mismatch")}),
    "oversized_orders": frozenset({("bot", "strategy_bucket_usage_ratio"), ("exchange", "fill_notional_ratio")}),
    "slow_signal_seconds": frozenset({("bot", "strategy_signal_latency_seconds")}),
    "unhandled_exception_after_seconds": frozenset({("logs", "unhandled_exceptions"), ("process", "up"),
                                                    ("bot", "*")}),
    "rejected_orders_burst": frozenset({("bot", "strategy_orders_total")}),
    "oversized_exits": frozenset({("exchange", "order_outcomes")}),
    "exits_never_sent": frozenset({("bot", "strategy_bucket_unlocks_total")}),
}

DEFECTS = tuple(WATCHED)
"""The reference bot's deliberate defects (`reference_bot.defects`), as a schedule names them."""
FLAG_DEFECTS = frozenset({"exits_never_sent"})  # switched on by naming them, no value
MAX_LEVERAGE = 125

# The value each defect takes: (what it is, in words; whether a value is in range).
DEFECT_VALUES: dict[str, tuple[str, Callable[[Decimal], bool]]] = {
    "oversized_orders": ("a factor greater than 1 and at most 100", lambda v: 1 < v <= 100),
    "slow_signal_seconds": ("seconds greater than 0 and at most 60", lambda v: 0 < v <= 60),
    "unhandled_exception_after_seconds": ("seconds, at least 0", lambda v: v >= 0),
    "rejected_orders_burst": ("a whole number from 1 to 200", lambda v: v == int(v) and 1 <= v <= 200),
    "oversized_exits": ("a factor greater than 1 and at most 100", lambda v: 1 < v <= 100),
}

_SYMBOL = re.compile(r"^[A-Z0-9]{5,20}$")


class FaultSpecError(InputError):
    """A fault schedule that cannot be run as written; the message names the item."""


@dataclass(frozen=True)
class Fault:
    """One scheduled fault, as written and as understood."""

    at: float                   # seconds after the run's start
    kind: str                   # "defect" | "sim"
    name: str
    value: Any = None           # the defect's DefectsConfig value, or the knob's
    lasts: float | None = None  # sim knobs: seconds it stays on (None: to the end of the run)
    expect: str | None = None   # a policy, "none", or None for the default
    text: str = ""              # the item as written
    where: str = ""             # "item 2" or "FILE:LINE"

    @property
    def span(self) -> float | None:
        """How long a sim fault is on, knob and aftermath (breaches then are put down to it): its
        ``for``, a storm's length, `AFTERMATH` after an instant one; None: to the end of the run."""
        if self.kind != "sim":
            return None
        if self.name == "rate_limit_storm":
            return self.value
        if self.name in INSTANT:
            return AFTERMATH
        return self.lasts

    @property
    def defects(self) -> dict[str, Any]:
        """The ``bot: defects:`` mapping of the release that carries this defect."""
        return {self.name: self.value}

    def expected(self, policies: Iterable[Policy]) -> tuple[str, ...]:
        """The policies of a stage that should catch this fault (empty: it must cause no breach)."""
        if self.expect == "none":
            return ()
        if self.expect is not None:
            return (self.expect,)
        if self.kind == "sim":
            return ()
        watched = WATCHED[self.name]
        return tuple(p.name for p in policies
                     if (p.source, p.metric) in watched or (p.source, "*") in watched)


# ---------------------------------------------------------------- reading a schedule

def load_schedule(spec: str) -> list[Fault]:
    """``--faults``: items inline (they contain "="), else the path of a YAML list of items."""
    if "=" in spec or not spec.strip():
        return parse_schedule(spec)
    path = Path(spec)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = "no such file" if isinstance(exc, FileNotFoundError) else f"cannot read it ({exc})"
        raise FaultSpecError(f"--faults {spec!r}: {reason}; give items such as 2h:defect=wrong_leverage:SOLUSDT=20, "
                             "or a YAML file listing them") from None
    return parse_schedule_file(text, str(path))


def parse_schedule(spec: str) -> list[Fault]:
    items = spec.split(",")
    if not any(item.strip() for item in items):
        raise FaultSpecError("--faults is empty; give items such as 2h:defect=wrong_leverage:SOLUSDT=20")
    faults = [parse_item(item, f"--faults item {n}") for n, item in enumerate(items, start=1)]
    return _checked_together(faults)


def parse_schedule_file(text: str, source: str) -> list[Fault]:
    import yaml

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise FaultSpecError(f"{source}: invalid YAML: {str(exc).splitlines()[0]}") from None
    if root is None or not isinstance(root, yaml.SequenceNode) or not root.value:
        raise FaultSpecError(f"{source}: expected a YAML list of fault items, e.g. "
                             "'- 2h:defect=wrong_leverage:SOLUSDT=20'")
    faults = []
    for node in root.value:
        where = f"{source}:{node.start_mark.line + 1}"
        if not isinstance(node, yaml.ScalarNode):
            raise FaultSpecError(f"{where}: expected one fault item as text, e.g. 10h:sim=ws_disconnect")
        faults.append(parse_item(node.value, where))
    return _checked_together(faults)


def parse_item(item: str, where: str) -> Fault:
    """One ``AT:KIND=NAME[=VALUE][:OPTION...]`` item; FaultSpecError naming ``where`` if it is not one."""
    text = item.strip()

    def refuse(reason: str) -> FaultSpecError:
        return FaultSpecError(f"{where} ({text!r}): {reason}")

    if not text:
        raise refuse("empty item (two commas in a row?)")
    when, colon, body = text.partition(":")
    if not colon:
        raise refuse("expected AT:KIND=NAME, e.g. 2h:defect=wrong_leverage:SOLUSDT=20 or 10h:sim=ws_disconnect")
    try:
        at = parse_duration(when)
    except ValueError:
        raise refuse(f"{when.strip()!r} is not a time into the run; expected e.g. 90s, 30m, 2h, 1d12h") from None
    head, *options = [part.strip() for part in body.split(":")]
    kind, eq, rest = head.partition("=")
    kind = kind.strip()
    if kind not in ("defect", "sim") or not eq:
        raise refuse(f"expected KIND=NAME after the time, KIND being defect or sim, not {head!r}")
    name, has_value, raw_value = (p.strip() for p in rest.partition("="))
    fault = Fault(at=at, kind=kind, name=name, text=text, where=where)
    fault = _defect(fault, has_value, raw_value, refuse) if kind == "defect" else \
        _sim(fault, has_value, raw_value, refuse)
    return _options(fault, options, refuse)


def _defect(fault: Fault, has_value: str, raw: str, refuse) -> Fault:
    name = fault.name
    if name not in DEFECTS:
        raise refuse(f"unknown defect {name!r}; defects: {', '.join(DEFECTS)}")
    if name == "wrong_leverage" or name in FLAG_DEFECTS:
        if has_value:
            example = "wrong_leverage:SOLUSDT=20" if name == "wrong_leverage" else name
            raise refuse(f"{name} takes no value after '='; write {example}")
        return replace(fault, value=True if name in FLAG_DEFECTS else None)
    if not has_value or not raw:
        raise refuse(f"{name} needs a value, e.g. {name}={_example(name)}")
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise refuse(f"{name}={raw}: expected a number, e.g. {name}={_example(name)}") from None
    meaning, in_range = DEFECT_VALUES[name]
    if not value.is_finite() or not in_range(value):
        raise refuse(f"{name}={raw}: expected {meaning}")
    return replace(fault, value=int(value) if name == "rejected_orders_burst" else value)


def _example(name: str) -> str:
    return {"oversized_orders": "3", "slow_signal_seconds": "0.5", "unhandled_exception_after_seconds": "600",
            "rejected_orders_burst": "20", "oversized_exits": "2"}.get(name, "1")


def _sim(fault: Fault, has_value: str, raw: str, refuse) -> Fault:
    name = fault.name
    if name not in SIM_FAULTS:
        raise refuse(f"unknown sim fault {name!r}; sim faults: {', '.join(SIM_FAULTS)}")
    meaning = SIM_FAULTS[name]
    if meaning is None:
        if has_value:
            raise refuse(f"{name} takes no value")
        return fault
    if not has_value or not raw:
        raise refuse(f"{name} needs a value: {meaning}")
    try:
        if name == "rate_limit_storm":
            value: Any = parse_duration(raw)
            ok = 0 < value <= 6 * 3600
        elif name == "duplicate_events":
            value = int(raw)
            ok = 1 <= value <= 10
        else:
            value = float(raw)
            ok = 0 < value <= (10_000 if name == "latency_ms" else 1)
    except ValueError:
        raise refuse(f"{name}={raw}: expected the {meaning}") from None
    if not ok:
        raise refuse(f"{name}={raw} is out of range: {meaning}")
    return replace(fault, value=value)


def _options(fault: Fault, options: list[str], refuse) -> Fault:
    seen: set[str] = set()
    for option in options:
        key, eq, value = (p.strip() for p in option.partition("="))
        if not eq or not key or not value:
            raise refuse(f"option {option!r}: expected KEY=VALUE (for=DURATION, expect=POLICY)")
        if key in seen:
            raise refuse(f"option {key} is given twice")
        seen.add(key)
        if key == "for":
            if fault.kind != "sim" or fault.name in INSTANT or fault.name == "rate_limit_storm":
                raise refuse("for= applies to sim faults that stay on (ws_stall, latency_ms, error_rate, "
                             "duplicate_events, reorder_events, ignore_leverage)")
            try:
                lasts = parse_duration(value)
            except ValueError:
                raise refuse(f"for={value}: expected a duration, e.g. 30m") from None
            if lasts <= 0:
                raise refuse("for= must be longer than 0 s")
            fault = replace(fault, lasts=lasts)
        elif key == "expect":
            if not re.match(r"^[a-z0-9][a-z0-9-]{0,63}$", value):
                raise refuse(f"expect={value}: expected a policy name (e.g. b-signal-latency-p95) or none")
            fault = replace(fault, expect=value)
        elif fault.name == "wrong_leverage" and _SYMBOL.match(key):
            if fault.value is not None:
                raise refuse("wrong_leverage takes one SYMBOL=LEVERAGE")
            if not value.isdigit():
                raise refuse(f"{key}={value}: expected a whole leverage, e.g. {key}=20")
            if not 1 <= int(value) <= MAX_LEVERAGE:
                raise refuse(f"wrong_leverage: {key}={value}: expected a leverage from 1 to {MAX_LEVERAGE}")
            fault = replace(fault, value={"symbol": key, "leverage": int(value)})
        else:
            extra = ", SYMBOL=LEVERAGE" if fault.name == "wrong_leverage" else ""
            raise refuse(f"unknown option {key!r}; options: for=DURATION, expect=POLICY|none{extra}")
    if fault.name == "wrong_leverage" and fault.value is None:
        raise refuse("wrong_leverage needs the symbol and the wrong leverage, e.g. wrong_leverage:SOLUSDT=20")
    return fault


def _checked_together(faults: list[Fault]) -> list[Fault]:
    placed: dict[float, Fault] = {}
    for fault in faults:
        if fault.kind == "defect":
            other = placed.get(fault.at)
            if other is not None:
                raise FaultSpecError(f"{fault.where} ({fault.text!r}): {other.where} already places a defective "
                                     "release at that time; one release at a time, so give them different times")
            placed[fault.at] = fault
    return sorted(faults, key=lambda f: f.at)


# ---------------------------------------------------------------- against the run

def check_schedule(faults: list[Fault], *, duration: float, strategy: StrategyConfig, stage: str,
                   policies: list[Policy], elsewhere: Mapping[str, str]) -> None:
    """Refuse what this run cannot honour: faults after its end, a wrong leverage for a symbol
    the strategy does not trade, an expected policy that is not in the stage (``elsewhere``:
    policy -> stage, for the message)."""
    names = {p.name for p in policies}
    for fault in faults:
        def refuse(reason: str) -> FaultSpecError:
            return FaultSpecError(f"{fault.where} ({fault.text!r}): {reason}")

        if fault.at >= duration:
            raise refuse(f"it comes at or after the end of the run ({duration / 3600:g} h): "
                         "lengthen --duration or move it earlier")
        if fault.expect not in (None, "none") and fault.expect not in names:
            other = elsewhere.get(fault.expect)
            where = f"it is a policy of stage {other}" if other else "no policy file has it"
            raise refuse(f"expect={fault.expect}: stage {stage} has no such policy ({where}); "
                         f"stage {stage} has: {', '.join(sorted(names))}")
        if fault.name == "wrong_leverage":
            symbol, leverage = fault.value["symbol"], fault.value["leverage"]
            if symbol not in strategy.symbols:
                raise refuse(f"symbol {symbol} is not defined under symbols; the wrong leverage must replace a "
                             f"configured one (the strategy trades {', '.join(strategy.symbols)})")
            if leverage == strategy.symbols[symbol].leverage:
                raise refuse(f"leverage {leverage} is the configured leverage of {symbol}; a wrong leverage must "
                             "differ from it")
