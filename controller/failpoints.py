"""Failpoints: named places where a test can make the daemon die as abruptly as a power cut, or wait.

``CANARY_FAILPOINTS=rollback.cancel_orders.after,other`` makes `hit("rollback.cancel_orders.after")`
SIGKILL the process. This is how the suite proves a rollback killed at any step resumes and
completes exactly once. ``NAME=hold:PATH`` makes `hit(NAME)` wait instead, until it can take a
shared lock (flock) on PATH: a test holding the exclusive lock keeps that step in progress for as
long as it likes, with no sleep on either side (e.g. a policy file that takes long to parse).
``NAME=raise`` makes `hit(NAME)` raise `FailpointRaised`: a step failing at that very place in a
daemon the test runs in its own process (`armed`). Unset (always, outside tests), `hit` is one dictionary lookup.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
from collections.abc import Iterator

ENV = "CANARY_FAILPOINTS"


def _parse(text: str) -> dict[str, str]:
    armed = {}
    for part in text.split(","):
        name, _, action = part.strip().partition("=")
        if name:
            armed[name] = action or "kill"
    return armed


_armed = _parse(os.environ.get(ENV, ""))


class FailpointRaised(RuntimeError):
    """What an armed ``raise`` failpoint raises."""


@contextlib.contextmanager
def armed(name: str, action: str) -> Iterator[None]:
    """Arm ``name`` with ``action`` in this process while the block runs (in-process tests)."""
    _armed[name] = action
    try:
        yield
    finally:
        _armed.pop(name, None)


def hit(name: str) -> None:
    action = _armed.get(name)
    if action is None:
        return
    if action == "raise":
        raise FailpointRaised(f"failpoint {name}")
    if action.startswith("hold:"):
        with open(action.removeprefix("hold:"), "a") as lock:  # noqa: PTH123 - a lock, not content
            fcntl.flock(lock, fcntl.LOCK_SH)  # blocks while the test holds LOCK_EX; released on close
        return
    os.kill(os.getpid(), signal.SIGKILL)
