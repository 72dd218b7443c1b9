"""The controller's records: SQLAlchemy models, the audit chain, schema revisions.

A few facts live here rather than in `database`, `schema` and `rollouts`, so that readers which
must start fast (`canaryctl status`, through `store.readonly`) know them without importing SQLAlchemy.
"""

from __future__ import annotations

import os
from pathlib import Path

SCHEMA_REVISION = "0007"
"""The schema revision this code reads and writes; a test keeps it equal to the migrations' head."""

TERMINAL = frozenset({"promoted", "rolled_back", "dry_run_done"})
"""`rollouts.state` of a finished rollout: `decide.TERMINAL`'s values (a test keeps them equal)."""


def default_db_path() -> Path:
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "canary-controller" / "canary.db"
