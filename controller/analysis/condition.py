"""Policy conditions: a comparison against an arithmetic threshold, parsed by a small grammar.

    condition  := comparator expr
    comparator := "==" | "!=" | "<" | "<=" | ">" | ">="
    expr       := term (("+" | "-") term)*
    term       := factor (("*" | "/") factor)*
    factor     := NUMBER | NAME | "(" expr ")" | "-" factor

``< 0.150``, ``== 0``, ``<= allocation * 1.02``. Names are bound when the condition is
evaluated (a bucket's allocation, the configured leverage, a baseline's value). Nothing from
a file is ever evaluated as Python.

A threshold is a finite number or an error, never NaN or an infinity (against which every
comparison is false, or ``!=`` always true): every part without names is evaluated when the
condition is parsed, so ``< 1/0`` or ``!= 1e308*10-1e308*10`` is refused when its file is
loaded; a part with names is checked when it is bound, and fails as a `ConditionError`.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property

COMPARATORS: dict[str, Callable[[float, float], bool]] = {
    "==": lambda a, b: math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12),
    "!=": lambda a, b: not math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12),
    "<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt,
}
_BINARY = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv}
_TOKEN = re.compile(r"\s*(?:(?P<number>\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)"
                    r"|(?P<name>[A-Za-z_][A-Za-z0-9_.]*)|(?P<op><=|>=|==|!=|[-+*/()<>]))")
MAX_LENGTH = 200


class ConditionError(ValueError):
    """A condition that does not parse, or cannot be evaluated; says where and what was expected."""


@dataclass(frozen=True, slots=True)
class Num:
    value: float


@dataclass(frozen=True, slots=True)
class Name:
    name: str


@dataclass(frozen=True, slots=True)
class Neg:
    operand: Expr


@dataclass(frozen=True, slots=True)
class Binary:
    op: str
    left: Expr
    right: Expr


Expr = Num | Name | Neg | Binary


@dataclass(frozen=True)
class Condition:
    text: str
    comparator: str
    threshold_expr: Expr

    @cached_property  # asked each time a threshold is bound
    def names(self) -> frozenset[str]:
        return _names(self.threshold_expr)

    def threshold(self, bindings: Mapping[str, float] | None = None) -> float:
        return _evaluate(self.threshold_expr, bindings or {})

    def holds(self, value: float, bindings: Mapping[str, float] | None = None) -> bool:
        """True when ``value`` satisfies the condition (the policy passes)."""
        return COMPARATORS[self.comparator](value, self.threshold(bindings))

    def __str__(self) -> str:
        return self.text


def parse(text: str, allowed_names: frozenset[str] | None = None) -> Condition:
    """Parse ``text``; with ``allowed_names``, refuse names that will never be bound."""
    if not isinstance(text, str):
        raise ConditionError(f"expected a condition such as '< 0.150', got {type(text).__name__}")
    if len(text) > MAX_LENGTH:
        raise ConditionError(f"a condition is at most {MAX_LENGTH} characters long")
    parser = _Parser(text)
    comparator = parser.comparator()
    expr = parser.expr()
    parser.end()
    condition = Condition(text.strip(), comparator, expr)
    _fold_constants(expr)
    if allowed_names is not None:
        unknown = sorted(condition.names - allowed_names)
        if unknown:
            known = ", ".join(sorted(allowed_names)) or "none"
            raise ConditionError(f"unknown name {unknown[0]!r} (names available here: {known})")
    return condition


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens: list[tuple[str, str, int]] = []
        pos = 0
        while pos < len(text):
            if text[pos:].strip() == "":
                break
            match = _TOKEN.match(text, pos)
            if match is None or match.end() == pos:
                raise ConditionError(f"unexpected character {text[pos:].lstrip()[:1]!r} at column {pos + 1} "
                                     f"in {text!r}")
            kind = match.lastgroup or "op"
            self.tokens.append((kind, match.group(kind), match.start(kind) + 1))
            pos = match.end()
        self.i = 0

    def _peek(self) -> tuple[str, str, int] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def _fail(self, expected: str) -> ConditionError:
        token = self._peek()
        found = f"{token[1]!r} at column {token[2]}" if token else "the end"
        return ConditionError(f"expected {expected}, found {found} in {self.text!r}")

    def comparator(self) -> str:
        token = self._peek()
        if token is None or token[1] not in COMPARATORS:
            raise self._fail("a comparison first (==, !=, <, <=, >, >=), e.g. '< 0.150'")
        self.i += 1
        return token[1]

    def expr(self) -> Expr:
        node = self.term()
        while (token := self._peek()) and token[1] in ("+", "-"):
            self.i += 1
            node = Binary(token[1], node, self.term())
        return node

    def term(self) -> Expr:
        node = self.factor()
        while (token := self._peek()) and token[1] in ("*", "/"):
            self.i += 1
            node = Binary(token[1], node, self.factor())
        return node

    def factor(self) -> Expr:
        token = self._peek()
        if token is None:
            raise self._fail("a number, a name or '('")
        kind, value, _ = token
        self.i += 1
        if kind == "number":
            number = float(value)
            if not math.isfinite(number):
                raise ConditionError(f"the number {value} is too large")
            return Num(number)
        if kind == "name":
            return Name(value)
        if value == "-":
            return Neg(self.factor())
        if value == "(":
            node = self.expr()
            if (closing := self._peek()) is None or closing[1] != ")":
                raise self._fail("')'")
            self.i += 1
            return node
        self.i -= 1
        raise self._fail("a number, a name or '('")

    def end(self) -> None:
        if self._peek() is not None:
            raise self._fail("the end of the condition")


def _names(expr: Expr) -> frozenset[str]:
    if isinstance(expr, Name):
        return frozenset({expr.name})
    if isinstance(expr, Neg):
        return _names(expr.operand)
    if isinstance(expr, Binary):
        return _names(expr.left) | _names(expr.right)
    return frozenset()


def _fold_constants(expr: Expr) -> None:
    """Evaluate every part of ``expr`` that has no names: a division by zero or a number that is
    not finite is refused now, not when the daemon first judges the policy."""
    if isinstance(expr, Neg):
        _fold_constants(expr.operand)
    elif isinstance(expr, Binary):
        if not _names(expr):
            _evaluate(expr, {})
            return
        _fold_constants(expr.left)
        _fold_constants(expr.right)


def _evaluate(expr: Expr, bindings: Mapping[str, float]) -> float:
    if isinstance(expr, Num):
        return expr.value
    if isinstance(expr, Name):
        try:
            value = float(bindings[expr.name])
        except KeyError:
            raise ConditionError(f"no value for {expr.name!r}") from None
        if not math.isfinite(value):
            raise ConditionError(f"{expr.name!r} is not a finite number ({value})")
        return value
    if isinstance(expr, Neg):
        return -_evaluate(expr.operand, bindings)
    right = _evaluate(expr.right, bindings)
    if expr.op == "/" and right == 0:
        raise ConditionError("division by zero in the threshold")
    result = _BINARY[expr.op](_evaluate(expr.left, bindings), right)
    if not math.isfinite(result):
        raise ConditionError(f"the threshold {_render(expr)} is not a finite number")
    return result


def _render(expr: Expr) -> str:
    """``expr`` written back as text, for messages."""
    if isinstance(expr, Num):
        return f"{expr.value:g}"
    if isinstance(expr, Name):
        return expr.name
    if isinstance(expr, Neg):
        return f"-{_render(expr.operand)}"
    left, right = (f"({_render(side)})" if isinstance(side, Binary) else _render(side)
                   for side in (expr.left, expr.right))
    return f"{left}{expr.op}{right}"
