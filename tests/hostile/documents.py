"""Where a document (nested dicts and lists) can be changed, and a copy with one change: the
hostile suites' mutations of valid files and payloads."""

from __future__ import annotations

from typing import Any


def spots(value: Any, path: tuple = ()) -> list[tuple]:
    """The path of every key and list item in ``value``."""
    found = [path] if path else []
    if isinstance(value, dict):
        for key, item in value.items():
            found += spots(item, path + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += spots(item, path + (index,))
    return found


def mutated(document: Any, path: tuple, replacement: Any, *, drop: bool = False) -> Any:
    """``document`` with the value at ``path`` dropped or replaced (a copy; the original is untouched)."""
    if not path:
        return replacement
    head, *rest = path
    copy = dict(document) if isinstance(document, dict) else list(document)
    if rest:
        copy[head] = mutated(document[head], tuple(rest), replacement, drop=drop)
    elif drop:
        del copy[head]
    else:
        copy[head] = replacement
    return copy
