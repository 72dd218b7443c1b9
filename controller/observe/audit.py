"""The audit source: whether the audit chain still verifies (checklist A: "without gaps")."""

from __future__ import annotations

from controller.analysis.observation import Observation, Sink
from controller.clock import Clock
from controller.errors import CanaryError
from controller.logs import get_logger
from controller.observe.source import PollingSource
from controller.store.audit import verify
from controller.store.database import Database

log = get_logger(__name__)


class AuditObserver(PollingSource):
    """Verifies the chain every ``interval`` seconds: ``chain_ok`` 1 or 0, and a heartbeat."""

    def __init__(self, db: Database, *, clock: Clock, sink: Sink, interval: float = 300.0) -> None:
        super().__init__(source="audit", target="the audit chain", clock=clock, sink=sink, interval=interval)
        self.db = db

    async def read_once(self) -> bool | None:
        """One verification. Returns whether the chain verifies (None: it could not be read)."""
        now = self.clock.time()
        try:
            report = await verify(self.db)
        except (CanaryError, OSError) as exc:
            self.fail(now, str(exc))
            return None
        if not report.ok:
            log.error("audit_chain_broken", first_bad_seq=report.first_bad_seq, reason=report.reason)
        self.sink(Observation(self.source, "chain_ok", (), 1.0 if report.ok else 0.0, now))
        self.beat(now)
        return report.ok
