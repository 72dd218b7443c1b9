"""Run canaryctl as operators do: a real process, its exit status, its stdout and stderr."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from dataclasses import dataclass

from tests.support.checkout import REPO


@dataclass
class Result:
    code: int
    out: str
    err: str


def canaryctl(*args: str, db: str | None = None, env: dict[str, str] | None = None, cwd=REPO,
              timeout: float = 120, memory: int | None = None) -> Result:
    """``memory``: a limit in bytes on the process's data segment (heap and anonymous maps)."""
    full_env = {**os.environ, "CANARY_ACTOR": "tester", **(env or {})}
    full_env.pop("CANARY_DB", None)
    full_env.pop("CANARY_CONFIG", None)
    if db is not None:
        full_env["CANARY_DB"] = db
    limited = None if memory is None else lambda: resource.setrlimit(resource.RLIMIT_DATA, (memory, memory))
    proc = subprocess.run([sys.executable, "-m", "controller", *args], capture_output=True, text=True,
                          env=full_env, cwd=cwd, timeout=timeout, preexec_fn=limited)
    return Result(proc.returncode, proc.stdout, proc.stderr)


def assert_refused(result: Result, *fragments: str) -> None:
    """Exit status 2, a clear message, no traceback."""
    assert result.code == 2, (result.code, result.out, result.err)
    assert "Traceback" not in result.err and "Traceback" not in result.out
    for fragment in fragments:
        assert fragment in result.err, (fragment, result.err)
