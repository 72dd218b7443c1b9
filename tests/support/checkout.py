"""Where the checkout's files are, for tests that read the shipped examples, policies and units."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
POLICIES = REPO / "policies"
SYSTEMD_DIR = REPO / "systemd"
MONITORING_DIR = REPO / "monitoring"
