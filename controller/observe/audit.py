"""The audit source: whether the audit chain still verifies (checklist A: "without gaps")."""

from __future__ import annotations

import logging

from controller.analysis.observation import Heartbeat, Observation, Sink
from controller.clock import Clock
from controller.errors import CanaryError
from controller.observe.polling import poll
from controller.store.audit import verify
from controller.store.database import Database

log = logging.getLogger(__name__)


class AuditObserver:
    """Verifies the chain every ``interval`` seconds: ``chain_ok`` 1 or 0, and a heartbeat."""

    def __init__(self, db: Database, *, clock: Clock, sink: Sink, interval: float = 300.0) -> None:
        self.db = db
        self.clock = clock
        self.sink = sink
        self.interval = interval

    async def check_once(self) -> bool | None:
        now = self.clock.time()
        try:
            report = await verify(self.db)
        except (CanaryError, OSError) as exc:
            self.sink(Heartbeat("audit", now, ok=False, error=str(exc)))
            return None
        if not report.ok:
            log.error("audit_chain_broken first_bad_seq=%s reason=%s", report.first_bad_seq, report.reason)
        self.sink(Observation("audit", "chain_ok", (), 1.0 if report.ok else 0.0, now))
        self.sink(Heartbeat("audit", now))
        return report.ok

    async def run(self) -> None:
        await poll(self.clock, self.interval, self.check_once)
