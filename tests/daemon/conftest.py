"""Fixtures of the daemon's process-level tests."""

from __future__ import annotations

import pytest

from tests.daemon.harness import Processes


@pytest.fixture
def processes(tmp_path):
    """The simulator and daemon processes of one test, taken down with their bots whatever happens."""
    procs = Processes(tmp_path)
    try:
        yield procs
    finally:
        procs.close()
