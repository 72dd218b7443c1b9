"""Failpoints: named places where a test can make the daemon die as abruptly as a power cut.

``CANARY_FAILPOINTS=rollback.cancel_orders.after,other`` makes `hit("rollback.cancel_orders.after")`
SIGKILL the process. Unset (always, outside tests), `hit` is one dictionary lookup. This is how
the suite proves a rollback killed at any step resumes and completes exactly once.
"""

from __future__ import annotations

import os
import signal

ENV = "CANARY_FAILPOINTS"
_armed = frozenset(p.strip() for p in os.environ.get(ENV, "").split(",") if p.strip())


def hit(name: str) -> None:
    if name in _armed:
        os.kill(os.getpid(), signal.SIGKILL)
