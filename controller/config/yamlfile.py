"""YAML files into validated, frozen models, with every refusal pointing at ``FILE:LINE: FIELD``.

PyYAML and pydantic each know half of what an operator needs: YAML knows where a value sits
in the file, pydantic knows what is wrong with it. This module joins the two: it composes the
node tree once, records the line of every key and list item, then turns each pydantic error
into a one-line ``ConfigError`` at the deepest line it can find.

Every input is bounded before it can cost memory or time: only regular files are read (a FIFO or
a device would block or never end), at most `MAX_BYTES`; nodes nest at most `MAX_DEPTH` deep;
and the document, aliases expanded, holds at most `MAX_NODES` nodes (a "billion laughs" of
aliases is refused at its line before anything is built from it).
"""

from __future__ import annotations

import os
import stat
import typing
from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from controller.config.model import LOCATION_KEY, Loc
from controller.errors import ConfigError

M = TypeVar("M", bound=BaseModel)

MAX_BYTES = 1024 * 1024
"""The largest YAML document read (config, strategy, manifest, pipeline, policy files are kilobytes)."""
MAX_DEPTH = 64
"""How deep mappings and lists may nest."""
MAX_NODES = 100_000
"""How many nodes a document may hold once its aliases are expanded."""


def load_model(model_cls: type[M], path: Path) -> M:
    """Read ``path`` as YAML and validate it as ``model_cls``; any refusal is a `ConfigError`."""
    return load_model_text(model_cls, read_text(path), str(path))


def read_text(path: Path) -> str:
    """A regular file's UTF-8 text, refused (`ConfigError`) when it is anything else or too large."""
    where = str(path)
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # stat opens nothing: a FIFO cannot block here
            raise ConfigError("not a regular file (a FIFO, device or directory): expected a YAML file", file=where)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):  # replaced between the two looks
                raise ConfigError("not a regular file: expected a YAML file", file=where)
            with os.fdopen(fd, "rb", closefd=False) as handle:
                data = handle.read(MAX_BYTES + 1)
        finally:
            os.close(fd)
    except FileNotFoundError:
        raise ConfigError("file not found", file=where) from None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror or exc}", file=where) from None
    if len(data) > MAX_BYTES:
        raise ConfigError(f"larger than {MAX_BYTES // 1024} KiB: not a file this tool reads", file=where)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text (byte {exc.start})", file=where) from None


def load_model_text(model_cls: type[M], text: str, source_name: str = "<input>") -> M:
    """Validate YAML ``text`` as ``model_cls``; ``source_name`` stands for the file in errors."""
    if len(text) > MAX_BYTES:
        raise ConfigError(f"larger than {MAX_BYTES // 1024} KiB: not a document this tool reads", file=source_name)
    data, lines = _parse(text, source_name)
    try:
        return model_cls.model_validate(data)
    except ValidationError as exc:
        # `from None`: the chained pydantic dump would print the raw input, secrets included.
        raise _config_error(model_cls, exc, data, lines, source_name) from None


def line_in(path: Path, location: Loc) -> int | None:
    """The line of ``location`` (e.g. ``("stages", 1, "mode")``, or its nearest parent that the file
    holds) in a YAML file that loaded before, for a refusal found after loading; None when the file
    cannot be read again."""
    try:
        _, lines = _parse(read_text(path), str(path))
    except ConfigError:
        return None
    while location not in lines and location:
        location = location[:-1]
    return lines.get(location)


# --- YAML -------------------------------------------------------------------------------------


class _TooDeep(Exception):
    def __init__(self, mark) -> None:
        self.mark = mark


class _DepthLimit:
    """Refuses to compose nodes nested deeper than `MAX_DEPTH` (PyYAML's composer recurses)."""

    def __init__(self, stream) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _TooDeep(self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


class _Loader(_DepthLimit, yaml.SafeLoader):
    """SafeLoader that reads YAML floats as exact Decimals (``0.4`` is ``Decimal('0.4')``) and
    refuses to compose nodes nested deeper than `MAX_DEPTH`."""


if yaml.__with_libyaml__:
    from yaml.composer import Composer
    from yaml.constructor import SafeConstructor
    from yaml.cyaml import CParser
    from yaml.resolver import Resolver

    class _FastLoader(_DepthLimit, Composer, CParser, SafeConstructor, Resolver):
        """`_Loader` with libyaml's scanner and parser (several times faster: the daemon reads every
        policy file before READY) under PyYAML's own composer, resolver and constructor: a document
        both accept composes to the same nodes, lines included."""

        def __init__(self, stream) -> None:
            CParser.__init__(self, stream)
            Composer.__init__(self)
            SafeConstructor.__init__(self)
            Resolver.__init__(self)
            self._depth = 0
else:
    _FastLoader = None


def _construct_decimal(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Decimal:
    text = loader.construct_scalar(node).replace("_", "")
    try:
        return Decimal(text)
    except InvalidOperation:
        pass
    # `.inf`, `.nan` and base-60 `1:30.5`: only PyYAML knows these spellings.
    return Decimal(repr(yaml.SafeLoader.construct_yaml_float(loader, node)))


_Loader.add_constructor("tag:yaml.org,2002:float", _construct_decimal)
if _FastLoader is not None:
    _FastLoader.add_constructor("tag:yaml.org,2002:float", _construct_decimal)


class _Unparsable(Exception):
    """libyaml refused the document: PyYAML parses it again, for the message a refusal quotes."""


def _parse(text: str, source: str) -> tuple[Any, dict[Loc, int]]:
    """The document's data and the line of each key and list item, refusing duplicate keys. Parsed by
    libyaml when it is there and PyYAML's reader would accept every character; a document libyaml
    refuses is parsed again by PyYAML, so that every refusal reads the same either way."""
    if _FastLoader is not None and yaml.reader.Reader.NON_PRINTABLE.search(text) is None:
        try:
            return _compose(_FastLoader(text), source, fast=True)
        except _Unparsable:
            pass
    try:
        loader = _Loader(text)  # its reader refuses control characters at once
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {str(exc).splitlines()[0]}", file=source) from None
    return _compose(loader, source, fast=False)


def _compose(loader, source: str, *, fast: bool) -> tuple[Any, dict[Loc, int]]:
    try:
        root = loader.get_single_node()
        if root is None:
            raise ConfigError("the file is empty: expected a mapping of settings", file=source, line=1)
        if not isinstance(root, yaml.MappingNode):
            raise ConfigError(f"expected a mapping of settings at the top level, got {_node_kind(root)}",
                              file=source, line=root.start_mark.line + 1)
        lines: dict[Loc, int] = {(): root.start_mark.line + 1}
        _index(loader, root, (), lines, frozenset(), source, [0])
        return loader.construct_document(root), lines
    except _TooDeep as exc:
        raise ConfigError(f"nested deeper than {MAX_DEPTH} levels", file=source, line=exc.mark.line + 1) from None
    except yaml.YAMLError as exc:
        if fast:
            raise _Unparsable from None
        if not isinstance(exc, yaml.MarkedYAMLError):
            raise ConfigError(f"invalid YAML: {str(exc).splitlines()[0]}", file=source) from None
        mark = exc.problem_mark or exc.context_mark
        # The message only: PyYAML's own rendering quotes the offending line, which may hold a secret.
        problem = " ".join(p for p in (exc.context, exc.problem) if p)
        where = f" (column {mark.column + 1})" if mark else ""
        raise ConfigError(f"invalid YAML: {problem}{where}", file=source,
                          line=mark.line + 1 if mark else None) from None
    finally:
        loader.dispose()


def _index(loader: yaml.SafeLoader, node: yaml.Node, path: Loc, lines: dict[Loc, int],
           active: frozenset[int], source: str, visited: list[int]) -> None:
    if id(node) in active:  # a recursive alias (`&a [*a]`): nothing more to find
        return
    visited[0] += 1  # every node as the constructed document will hold it, aliases expanded
    if visited[0] > MAX_NODES:
        raise ConfigError(f"the document's aliases expand past {MAX_NODES} nodes", file=source,
                          line=node.start_mark.line + 1)
    active = active | {id(node)}
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue  # complex keys are refused by the constructor; merges may override on purpose
            key = loader.construct_object(key_node)
            line = key_node.start_mark.line + 1
            if key in seen:
                # PyYAML silently keeps the last value; a second `leverage:` is always a mistake.
                raise ConfigError(f"duplicate key {key!r} (first defined on line {seen[key]})",
                                  file=source, line=line, field=dotted(path + (_key(key),)))
            seen[key] = lines[path + (_key(key),)] = line
            _index(loader, value_node, path + (_key(key),), lines, active, source, visited)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines[path + (index,)] = item.start_mark.line + 1
            _index(loader, item, path + (index,), lines, active, source, visited)


def _key(key: Any) -> str:
    """A mapping key as text in paths, so ``12345:`` is not shown as list index ``[12345]``."""
    return key if isinstance(key, str) else str(key)


def _node_kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    if not isinstance(node, yaml.ScalarNode):
        return "something else"
    if len(node.value) <= 60:
        return f"the single value {_escaped(repr(node.value))}"
    return f"the single value {_escaped(repr(node.value[:60]))}... ({len(node.value)} characters)"


def dotted(path: Loc) -> str:
    """``('symbols', 'BTCUSDT', 'leverage')`` as ``symbols.BTCUSDT.leverage``; indices as ``[2]``.
    A key's control characters are written as escapes (``\\x1b``): a key cannot draw on the terminal."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{_escaped(str(part))}" if text else _escaped(str(part)))
    return text


def _escaped(text: str) -> str:
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)


# --- pydantic errors into sentences -------------------------------------------------------------


def _config_error(model_cls: type[BaseModel], exc: ValidationError, data: Any,
                  lines: Mapping[Loc, int], source: str) -> ConfigError:
    """One `ConfigError`: the first problem in file order, the others as further rendered lines."""
    found: list[tuple[int | None, str | None, str]] = []
    for error in exc.errors(include_url=False):
        path = _data_path(error, data)
        line = next((lines[path[:n]] for n in range(len(path), -1, -1) if path[:n] in lines), None)
        entry = (line, dotted(path) or None, _sentence(model_cls, error, path))
        if entry not in found:  # union members can report the same problem twice
            found.append(entry)
    found.sort(key=lambda entry: entry[0] if entry[0] is not None else 1 << 30)
    (line, field, message), rest = found[0], found[1:]
    extra = "".join("\n" + ConfigError(m, file=source, line=ln, field=f).render() for ln, f, m in rest)
    return ConfigError(message + extra, file=source, line=line, field=field)


def _data_path(error: Mapping[str, Any], data: Any) -> Loc:
    """pydantic's location reduced to keys and indices of the input.

    pydantic adds schema tags (union member names, ``[key]``) that are not in the file; a part is
    kept when it leads into the data, or when it names, at the end, the missing field or the
    field a validator's `error_at` pointed to.
    """
    loc = tuple(error["loc"]) + tuple(error.get("ctx", {}).get(LOCATION_KEY, ()))
    path: list[str | int] = []
    node = data
    for i, part in enumerate(loc):
        if isinstance(node, Mapping) and part in node:
            node, part = node[part], _key(part)
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        elif not (i == len(loc) - 1 and error["type"] in ("missing", "config_value")):
            continue
        path.append(part)
    return tuple(path)


def _sentence(model_cls: type[BaseModel], error: Mapping[str, Any], path: Loc) -> str:
    """What was expected, in plain words; pydantic's own one-line message as the fallback."""
    kind, ctx, got = error["type"], error.get("ctx", {}), _shown(error.get("input"))
    if error["loc"] and error["loc"][-1] == "[key]":
        return f"invalid key: {_sentence(model_cls, {**error, 'loc': error['loc'][:-1]}, path)}"
    if kind == "missing":
        return "missing required field"
    if kind == "extra_forbidden":
        target, _ = _schema_at(model_cls, path[:-1])
        allowed = ", ".join(_field_names(target)) if _is_model(target) else ""
        return f"unknown field {str(path[-1])!r}" + (f" (allowed: {allowed})" if allowed else "")
    if kind in ("value_error", "assertion_error") and "error" in ctx:
        return str(ctx["error"])
    if kind == "config_value":
        return error["msg"]
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        target, metadata = _schema_at(model_cls, path)
        noun = "an integer" if target is int else "a number"
        return f"expected {noun} {_range(metadata) or _range([ctx])}, got {got}"
    if kind in ("literal_error", "enum"):
        return f"expected {ctx['expected']}, got {got}"
    if kind == "string_pattern_mismatch":
        return f"expected text matching {ctx['pattern']}, got {got}"
    if kind in ("too_short", "too_long"):
        bound = "at least" if kind == "too_short" else "at most"
        count = ctx.get("min_length" if kind == "too_short" else "max_length")
        return f"expected {bound} {count} item{'s' if count != 1 else ''}, got {ctx.get('actual_length')}"
    if kind == "string_type" and isinstance(error.get("input"), (bool, int, Decimal)):
        # `sha256: 0000...` or `version: 1.10`: YAML read the text as a number.
        return f"expected text, got the number {got}: put it in quotes"
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}, got {got}"
    return f"{error['msg'][:1].lower()}{error['msg'][1:]}, got {got}"


_EXPECTED = {
    "int_type": "an integer", "int_parsing": "an integer", "int_from_float": "a whole number",
    "decimal_type": "a decimal number", "decimal_parsing": "a decimal number",
    "finite_number": "a finite number", "float_type": "a number", "float_parsing": "a number",
    "bool_type": "true or false", "bool_parsing": "true or false",
    "string_type": "text", "string_too_short": "non-empty text",
    "dict_type": "a mapping (key: value lines)", "model_type": "a mapping (key: value lines)",
    "model_attributes_type": "a mapping (key: value lines)",
    "list_type": "a list", "tuple_type": "a list", "path_type": "a file path",
    "none_required": "nothing (null)",
}


def _shown(value: Any) -> str:
    """A short rendering of the offending input, as an operator would have typed it."""
    if value is None:
        return "an empty value"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, Decimal, float)):
        return str(value)
    if isinstance(value, str):
        return repr(value if len(value) <= 60 else value[:57] + "...")
    if isinstance(value, Mapping):
        return "a mapping"
    return "a list" if isinstance(value, list) else type(value).__name__


def _range(metadata: Sequence[Any]) -> str:
    """``from 1 to 125``, ``greater than 0 and at most 1``: the field's bounds in words."""
    bounds: dict[str, Any] = {}
    for item in _flat(metadata):
        for name in ("gt", "ge", "lt", "le"):
            value = item.get(name) if isinstance(item, Mapping) else getattr(item, name, None)
            if value is not None:
                bounds[name] = value
    low = (f"greater than {bounds['gt']}" if "gt" in bounds
           else f"of at least {bounds['ge']}" if "ge" in bounds else None)
    high = (f"less than {bounds['lt']}" if "lt" in bounds
            else f"at most {bounds['le']}" if "le" in bounds else None)
    if "ge" in bounds and "le" in bounds:
        return f"from {bounds['ge']} to {bounds['le']}"
    if low and high:
        return f"{low} and {high}"
    return low or high or ""


def _flat(metadata: Sequence[Any]) -> list[Any]:
    """Constraints with any nested ``Field(...)`` (from ``Annotated[Decimal, Field(gt=0)]``) opened."""
    return [inner for item in metadata
            for inner in (_flat(item.metadata) if isinstance(item, FieldInfo) else [item])]


def _schema_at(model_cls: type[BaseModel], path: Loc) -> tuple[Any, list[Any]]:
    """The type that validates the value at ``path`` and its constraints; ``(None, [])`` if unknown."""
    target: Any = model_cls
    metadata: list[Any] = []
    for part in path:
        target, metadata = _unwrap(target)
        origin, args = typing.get_origin(target), typing.get_args(target)
        if _is_model(target):
            field = next((f for name, f in target.model_fields.items() if (f.alias or name) == part), None)
            if field is None:
                return None, []
            target, metadata = field.annotation, list(field.metadata)
        elif origin in (dict, Mapping) and len(args) == 2:
            target, metadata = args[1], []
        elif origin in (list, tuple, set, frozenset, Sequence) and args:
            target, metadata = args[0], []
        else:
            return None, []
    target, inner = _unwrap(target)
    return target, metadata + inner


def _unwrap(target: Any) -> tuple[Any, list[Any]]:
    """Strip ``Annotated`` (keeping its constraints) and ``| None``."""
    metadata: list[Any] = []
    while True:
        if typing.get_origin(target) is Annotated:
            target, *extra = typing.get_args(target)
            metadata.extend(extra)
            continue
        members = [a for a in typing.get_args(target) if a is not type(None)]
        if typing.get_origin(target) in (typing.Union, _UnionType) and len(members) == 1:
            target = members[0]
            continue
        return target, metadata


_UnionType = type(int | None)


def _is_model(target: Any) -> bool:
    return isinstance(target, type) and issubclass(target, BaseModel)


def _field_names(model_cls: type[BaseModel]) -> list[str]:
    return [field.alias or name for name, field in model_cls.model_fields.items()]
