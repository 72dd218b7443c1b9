"""A release and a config snapshot as the store keeps them: the one reading of their rows, and
what changed from one snapshot to another.

`store.releases` (the async store, SQLAlchemy) and `store.listing` (`canaryctl`'s read commands,
plain SQL through a `store.readonly.Reader`) both build these from their rows, so this module
imports no SQLAlchemy.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from controller.canonical import sha256_hex
from controller.errors import StoreError
from controller.store.readonly import when

MIN_PREFIX = 6
"""The fewest hex digits of a SHA-256 that name a config snapshot."""


def _getter(row: Any):
    """Column access on a mapping (`store.readonly`) or an ORM row (attributes)."""
    return row.__getitem__ if isinstance(row, Mapping) else lambda name: getattr(row, name)


@dataclass(frozen=True)
class ReleaseInfo:
    id: int
    version: str
    manifest: dict[str, Any]
    manifest_sha256: str
    artifact_sha256: str
    config_sha256: str
    notes: str | None
    created_by: str
    created_at: datetime

    @classmethod
    def from_row(cls, row: Any) -> ReleaseInfo:
        """From a row of the releases table, as a mapping or with attributes (a time in text is parsed)."""
        get = _getter(row)
        return cls(get("id"), get("version"), json.loads(get("manifest")), get("manifest_sha256"),
                   get("artifact_sha256"), get("config_sha256"), get("notes"), get("created_by"),
                   when(get("created_at")))

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "version": self.version, "manifest": self.manifest,
                "manifest_sha256": self.manifest_sha256, "artifact_sha256": self.artifact_sha256,
                "config_sha256": self.config_sha256, "notes": self.notes, "created_by": self.created_by,
                "created_at": self.created_at.isoformat()}


@dataclass(frozen=True)
class Snapshot:
    sha256: str
    config: dict[str, Any]
    created_at: datetime

    @classmethod
    def from_row(cls, row: Any) -> Snapshot:
        """From a row of the config snapshots table, re-hashed: an edited row is a `StoreError`, never used."""
        get = _getter(row)
        sha256, content = get("sha256"), get("content")
        if sha256_hex(content) != sha256:
            raise StoreError(f"config snapshot {sha256} does not match its content's hash: the row was edited")
        return cls(sha256, json.loads(content), when(get("created_at")))


def is_prefix(ref: str) -> bool:
    """Whether ``ref`` may be a prefix of a snapshot's SHA-256 (at least `MIN_PREFIX` lowercase hex digits)."""
    return len(ref) >= MIN_PREFIX and all(c in "0123456789abcdef" for c in ref)


def not_found(ref: str) -> str:
    return (f"no config snapshot or release {ref!r} (give a SHA-256, a prefix of "
            f"at least {MIN_PREFIX} hex digits, or a release version)")


@dataclass(frozen=True)
class Change:
    path: str
    before: Any
    after: Any

    @property
    def kind(self) -> str:
        if self.before is _ABSENT:
            return "added"
        if self.after is _ABSENT:
            return "removed"
        return "changed"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path, "change": self.kind}
        if self.before is not _ABSENT:
            out["before"] = self.before
        if self.after is not _ABSENT:
            out["after"] = self.after
        return out


_ABSENT = object()


def diff_configs(a: dict[str, Any], b: dict[str, Any]) -> list[Change]:
    """Field-level differences between two configs, by dotted path, in path order."""
    flat_a, flat_b = _flatten(a), _flatten(b)
    return [Change(path, flat_a.get(path, _ABSENT), flat_b.get(path, _ABSENT))
            for path in sorted(flat_a.keys() | flat_b.keys()) if flat_a.get(path, _ABSENT) != flat_b.get(path, _ABSENT)]


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}
