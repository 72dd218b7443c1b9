"""What the bot runs with: its strategy file (its own schema, read the way the bot reads it) and
its cadence.

The strategy YAML is the release's config. The controller reads the same file for what it
checks (symbols, leverage, buckets) and passes the ``bot:`` section through unread; that
section is this bot's own: today its deliberate defects. Unknown fields are refused, and a
refusal names ``FILE:LINE: FIELD`` and what was expected.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, StrictBool, StrictInt, StringConstraints, \
    ValidationError, model_validator
from pydantic_core import PydanticCustomError

from reference_bot.errors import ConfigError

Path_ = tuple[str | int, ...]
AT = "located_at"  # context key of `_error_at`: where below the model a validator's error points


def _within(low: Decimal | int, high: Decimal | int, *, noun: str, low_open: bool = False):
    """A validator refusing values outside [low, high] (or (low, high]) in words an operator reads."""
    bounds = f"greater than {low} and at most {high}" if low_open else f"from {low} to {high}"

    def check(value):
        if (value <= low if low_open else value < low) or value > high:
            raise ValueError(f"expected {noun} {bounds}, got {value}")
        return value
    return AfterValidator(check)


def _at_least(low: Decimal | int, *, noun: str):
    def check(value):
        if value < low:
            raise ValueError(f"expected {noun} of at least {low}, got {value}")
        return value
    return AfterValidator(check)


Symbol = Annotated[str, StringConstraints(pattern=r"^[A-Z0-9]{5,20}$")]
Leverage = Annotated[StrictInt, _within(1, 125, noun="an integer")]
Share = Annotated[Decimal, _within(0, 1, noun="a number", low_open=True)]
Factor = Annotated[Decimal, _within(1, 100, noun="a number", low_open=True)]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SymbolSpec(_Model):
    """How one symbol is traded."""

    leverage: Leverage
    margin_type: Literal["ISOLATED", "CROSSED"] = "CROSSED"


class BucketSpec(_Model):
    """A share of the account's capital that a group of symbols trades within."""

    allocation: Share
    symbols: list[Symbol]


class SizingSpec(_Model):
    order_fraction: Share
    """Fraction of the bucket's notional limit one order may use."""
    max_open_orders_per_symbol: Annotated[StrictInt, _at_least(1, noun="an integer")] = 2


class WrongLeverage(_Model):
    """Set ``leverage`` on the exchange for ``symbol`` instead of the configured one."""

    symbol: Symbol
    leverage: Leverage


class Defects(_Model):
    """Deliberate defects a release of this bot can carry (see `reference_bot.defects`); all off
    by default, so that the canary, the harness and the tests have something real to catch."""

    wrong_leverage: WrongLeverage | None = None
    oversized_orders: Factor | None = None
    slow_signal_seconds: Annotated[Decimal, _within(0, 60, noun="a number", low_open=True)] | None = None
    unhandled_exception_after_seconds: Annotated[Decimal, _at_least(0, noun="a number")] | None = None
    rejected_orders_burst: Annotated[StrictInt, _within(1, 200, noun="an integer")] | None = None
    oversized_exits: Factor | None = None
    exits_never_sent: StrictBool = False
    trades_in_shadow: StrictBool = False


class BotSection(_Model):
    """The strategy file's ``bot:`` section: this bot's own settings."""

    defects: Defects = Defects()
    stream_prices: StrictBool = False
    """Take mark prices from the `<symbol>@markPrice@1s` streams instead of reading them over REST
    at every iteration (REST still answers while the stream has no fresh price)."""


class Strategy(_Model):
    """The strategy file as this bot reads it: every symbol in exactly one bucket."""

    symbols: dict[Symbol, SymbolSpec]
    buckets: dict[Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")], BucketSpec]
    sizing: SizingSpec
    bot: BotSection = BotSection()

    @property
    def defects(self) -> Defects:
        return self.bot.defects

    @model_validator(mode="after")
    def _consistent(self) -> Strategy:
        if not self.symbols:
            raise _error_at(("symbols",), "expected at least one symbol")
        if sum((b.allocation for b in self.buckets.values()), Decimal(0)) > 1:
            raise _error_at(("buckets",), "bucket allocations sum to more than 1 (all capital)")
        owner: dict[str, str] = {}
        for name, bucket in self.buckets.items():
            for index, symbol in enumerate(bucket.symbols):
                if symbol not in self.symbols:
                    raise _error_at(("buckets", name, "symbols", index), f"symbol {symbol} is not defined under symbols")
                if symbol in owner:
                    raise _error_at(("buckets", name, "symbols", index),
                                    f"symbol {symbol} is already in bucket {owner[symbol]!r}")
                owner[symbol] = name
        for symbol in self.symbols:
            if symbol not in owner:
                raise _error_at(("symbols", symbol), f"symbol {symbol} is in no bucket; add it to one under buckets")
        wrong = self.defects.wrong_leverage
        if wrong is not None:
            at = ("bot", "defects", "wrong_leverage")
            if wrong.symbol not in self.symbols:
                raise _error_at(at + ("symbol",), f"symbol {wrong.symbol} is not defined under symbols; "
                                                  "the wrong leverage must replace a configured one")
            if wrong.leverage == self.symbols[wrong.symbol].leverage:
                raise _error_at(at + ("leverage",), f"leverage {wrong.leverage} is the configured leverage of "
                                                    f"{wrong.symbol}; a wrong leverage must differ from it")
        return self

    def bucket_of(self, symbol: str) -> str:
        for name, bucket in self.buckets.items():
            if symbol in bucket.symbols:
                return name
        raise KeyError(f"symbol {symbol} is not in this strategy")

    def order_notional(self, symbol: str, capital: Decimal) -> Decimal:
        """One order's notional: ``order_fraction`` of allocation x capital x leverage."""
        allocation = self.buckets[self.bucket_of(symbol)].allocation
        return self.sizing.order_fraction * allocation * capital * self.symbols[symbol].leverage


def _error_at(path: Path_, message: str) -> PydanticCustomError:
    return PydanticCustomError("located", message, {AT: path})


# --- reading the file ---------------------------------------------------------------------------


def load_strategy(path: Path | str) -> Strategy:
    """Read and validate the strategy file; any refusal is one located `ConfigError`."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("file not found", file=source) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read it: {exc}", file=source) from None
    data, lines = _parse(text, source)
    return strategy_from(data, source=source, lines=lines)


def strategy_from(data: Any, *, source: str = "<strategy>", lines: Mapping[Path_, int] | None = None) -> Strategy:
    """Validate already-parsed strategy data (a mapping, as the file holds it)."""
    try:
        return Strategy.model_validate(data)
    except ValidationError as exc:
        raise _located(exc, data, lines or {}, source) from None


class _DecimalLoader(yaml.SafeLoader):
    """Reads YAML floats as exact Decimals: ``0.1`` is ``Decimal('0.1')``, never a binary float."""


def _decimal(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Decimal:
    try:
        return Decimal(loader.construct_scalar(node).replace("_", ""))
    except InvalidOperation:  # .inf, .nan: spellings only PyYAML knows
        return Decimal(repr(yaml.SafeLoader.construct_yaml_float(loader, node)))


_DecimalLoader.add_constructor("tag:yaml.org,2002:float", _decimal)


def _parse(text: str, source: str) -> tuple[Any, dict[Path_, int]]:
    loader = _DecimalLoader(text)
    try:
        root = loader.get_single_node()
        if not isinstance(root, yaml.MappingNode):
            raise ConfigError("expected a mapping of settings at the top level", file=source, line=1)
        lines: dict[Path_, int] = {}
        _index(root, (), lines)
        return loader.construct_document(root), lines
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise ConfigError(f"invalid YAML: {exc.problem or exc.context}", file=source,
                          line=mark.line + 1 if mark else None) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {str(exc).splitlines()[0]}", file=source) from None
    finally:
        loader.dispose()


def _index(node: yaml.Node, path: Path_, lines: dict[Path_, int]) -> None:
    """The line of every key and list item, by its path in the data."""
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                lines[path + (key.value,)] = key.start_mark.line + 1
                _index(value, path + (key.value,), lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines[path + (index,)] = item.start_mark.line + 1
            _index(item, path + (index,), lines)


def _located(exc: ValidationError, data: Any, lines: Mapping[Path_, int], source: str) -> ConfigError:
    """The first refusal in file order, at the deepest line known for its field."""
    found = []
    for error in exc.errors(include_url=False):
        path = _data_path(tuple(error["loc"]) + tuple(error.get("ctx", {}).get(AT, ())), data, error["type"])
        line = next((lines[path[:n]] for n in range(len(path), 0, -1) if path[:n] in lines), None)
        found.append((line if line is not None else 1 << 30, line, path, _sentence(error, path)))
    _, line, path, message = min(found, key=lambda entry: entry[0])
    field = "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else str(p)) for i, p in enumerate(path))
    return ConfigError(message, file=source, line=line, field=field or None)


def _data_path(loc: Path_, data: Any, kind: str) -> Path_:
    """pydantic's location without its schema tags: only the keys and indices of the data (and,
    last, a missing field's name)."""
    path: list[str | int] = []
    node = data
    for i, part in enumerate(loc):
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        elif not (i == len(loc) - 1 and kind in ("missing", "extra_forbidden", "located")):
            continue
        path.append(part)
    return tuple(path)


def _sentence(error: Mapping[str, Any], path: Path_) -> str:
    kind, ctx, got = error["type"], error.get("ctx", {}), error.get("input")
    if kind == "missing":
        return "missing required field"
    if kind == "extra_forbidden":
        allowed = _allowed_fields(path[:-1])
        return f"unknown field {path[-1]!r}" + (f" (allowed: {', '.join(allowed)})" if allowed else "")
    if kind == "value_error" and "error" in ctx:
        return str(ctx["error"])
    if kind == "located":
        return error["msg"]
    shown = repr(got) if isinstance(got, str) else ("a mapping" if isinstance(got, Mapping) else got)
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}, got {shown}"
    return f"{error['msg'][:1].lower()}{error['msg'][1:]}, got {shown}"


_EXPECTED = {"int_type": "an integer", "int_from_float": "an integer", "decimal_parsing": "a number",
             "decimal_type": "a number", "bool_type": "true or false", "string_type": "text",
             "dict_type": "a mapping (key: value lines)", "model_type": "a mapping (key: value lines)",
             "list_type": "a list"}


def _allowed_fields(path: Path_) -> list[str]:
    """The field names of the model at ``path`` (through models and mappings of models)."""
    target: Any = Strategy
    for part in path:
        if isinstance(part, int) or not (isinstance(target, type) and issubclass(target, BaseModel)):
            return []
        field = target.model_fields.get(part)
        if field is None:  # a mapping's key: its values' model
            return []
        target = field.annotation
        args = [a for a in getattr(target, "__args__", ()) if a is not type(None)]
        if getattr(target, "__origin__", None) is dict:
            return []
        if args and not (isinstance(target, type) and issubclass(target, BaseModel)):
            target = args[0]
    return list(target.model_fields) if isinstance(target, type) and issubclass(target, BaseModel) else []


# --- cadence ------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class BotSettings:
    """The bot's cadence, in seconds of its clock (simulated time when accelerated)."""

    interval: float = 1.0
    """Between two trading iterations (read prices, decide, queue orders)."""
    order_ttl: float | None = None
    """A resting entry order older than this is canceled; default: five intervals."""
    reconcile_every: float = 5.0
    """Between two reads of the exchange's view (leverage, positions, open orders, capital)."""
    seed: int = 0
    """Seeds the signal: the same seed gives the same sequence of directions."""
    shutdown_timeout: float = 5.0
    """Bound on each shutdown step (finishing the order in flight, canceling open orders)."""
    stream_timeout: float = 10.0
    """How long to wait for the user-data stream before trading without it (REST reconciles)."""
    price_max_age: float = 5.0
    """In streaming mode, how long a streamed mark price counts as fresh: five missed pushes of
    Binance's 1 s stream. A simulator that pushes on slower ticks needs about two of its ticks."""
    shadow: bool = False
    """Shadow mode (``CANARY_SHADOW=1``): decide as usual, send nothing that changes the account,
    paper-fill each order at the mark price and count it under ``mode="shadow"``."""

    def __post_init__(self) -> None:
        for name in ("interval", "reconcile_every", "shutdown_timeout", "stream_timeout", "price_max_age"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0 seconds, got {getattr(self, name)}")
        if self.order_ttl is not None and self.order_ttl <= 0:
            raise ValueError(f"order_ttl must be > 0 seconds, got {self.order_ttl}")

    @property
    def entry_ttl(self) -> float:
        return self.order_ttl if self.order_ttl is not None else 5 * self.interval
