"""The metric names a PromQL expression reads, found by a tokenizer that knows just enough
PromQL: strings, label matchers, grouping clauses, durations and numbers are not names; an
identifier followed by ``(`` is a function or an aggregation, not a metric."""

from __future__ import annotations

import re

_GRAFANA_VARIABLE = re.compile(r"\$\{[^}]*\}|\$\w+")      # $instance, ${bot}, $__rate_interval
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_TOKEN = re.compile(r"(?P<number>(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?[a-zA-Z]*)"
                    r"|(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?P<call>\s*\()?")
KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan", "by", "without", "on",
                      "ignoring", "group_left", "group_right"})


def metric_names(expr: str) -> set[str]:
    """Every metric name ``expr`` selects, e.g. ``{"canary_rollbacks_total"}`` for
    ``sum by (trigger) (increase(canary_rollbacks_total{instance=~"$instance"}[5m])) > 0``."""
    text = _GRAFANA_VARIABLE.sub("", expr)
    text = _STRING.sub('""', text)
    text = _MATCHERS.sub("", text)
    text = _RANGE.sub("", text)
    text = _GROUPING.sub("", text)
    names = set()
    for token in _TOKEN.finditer(text):
        name = token.group("name")
        if name and not token.group("call") and name.lower() not in KEYWORDS:
            names.add(name)
    return names


def variable_metric_names(query: str) -> set[str]:
    """The metric a Grafana variable query reads: ``label_values(METRIC{...}, label)``; none for
    ``label_values(label)``, which reads every series."""
    match = re.fullmatch(r"\s*label_values\(\s*(?:(?P<series>.*),)?\s*\w+\s*\)\s*", query, re.DOTALL)
    if match is None:
        return metric_names(query)
    return metric_names(match.group("series") or "")
