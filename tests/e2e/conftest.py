"""What the end-to-end tests share: one run of ``canaryctl demo``, which lasts a minute of wall time."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.canaryctl import Result, canaryctl


@dataclass(frozen=True)
class DemoRun:
    result: Result
    workdir: Path
    """The ``--workdir`` of the run: its database, the bots' files and the daemon's state."""


@pytest.fixture(scope="package")
def demo_run(tmp_path_factory) -> DemoRun:
    """``canaryctl demo --json`` run once, at debug log level (whose lines must carry no secret), for
    the tests that judge its outcome and the tests that read what it wrote; none of them writes
    into its workdir."""
    workdir = tmp_path_factory.mktemp("demo-run") / "demo"
    # A minute of wall time on an idle machine; the timeout leaves room for a loaded one.
    result = canaryctl("demo", "--json", "--log-level", "debug", "--workdir", str(workdir), timeout=240)
    return DemoRun(result, workdir)
