"""`make bench QUICK=1`'s code path, on one group, so that the benchmark cannot rot: its table and
its last line, one JSON object with every figure (the measured ones numbers, the rest null), the
machine and the commit. No figure is compared with anything: benchmarks are not tests."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

from tests.support.checkout import REPO

RUN = REPO / "bench" / "run.py"
MEASURED = ("ready_ms",)  # what the `ready` group measures


def test_quick_run_prints_a_table_and_a_json_line_of_every_figure():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, str(RUN), "--quick", "--only", "ready"], capture_output=True, text=True,
                          env=env, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    figures = json.loads(lines[-1])
    goals = _goals()
    assert set(goals) <= set(figures)
    for key in MEASURED:
        assert isinstance(figures[key], (int, float)) and not isinstance(figures[key], bool), (key, figures[key])
    assert all(figures[key] is None for key in goals if key not in MEASURED)
    assert figures["failed_groups"] == [] and figures["quick"] is True
    assert isinstance(figures["machine"]["cores"], int) and figures["machine"]["python"]
    assert len(figures["git"]["commit"]) == 40 and isinstance(figures["git"]["dirty"], bool)
    table = {line.split()[0]: line for line in lines[1:-1]}
    assert set(goals) <= set(table)
    assert "not measured" in table["takeover_ms"] and "not measured" not in table["ready_ms"]


def test_a_group_that_is_not_one_is_refused():
    done = subprocess.run([sys.executable, str(RUN), "--only", "nonsense"], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 2 and "nonsense" in done.stderr


def _goals() -> list[str]:
    """The figures of the issue's table, as run.py lists them."""
    spec = importlib.util.spec_from_file_location("bench_run", RUN)  # bench/ is not a package
    runner = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = runner  # its dataclasses look their module up
    try:
        spec.loader.exec_module(runner)
    finally:
        del sys.modules[spec.name]
    return list(runner.GOALS)
