"""The import contracts of pyproject.toml ([tool.importlinter]) hold: dependencies point down,
the analysis does no I/O, only the exchange layer imports python-binance, only the CLI, the demo
and the harness import the simulator, and the controller and the reference bot share no code."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.checkout import REPO


def test_the_import_contracts_hold():
    # This checkout's package, whatever the virtual environment has installed.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    lint_imports = Path(sys.executable).with_name("lint-imports")  # installed with the test extra
    result = subprocess.run([str(lint_imports), "--no-cache"], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, f"lint-imports exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    assert "0 broken" in result.stdout, result.stdout
