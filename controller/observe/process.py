"""Whether the bot's process is up, and how many times it was restarted, as Linux's /proc tells it.

Each check asks ``pid_source`` for the bot's current pid (None: none known) and reads
``/proc/PID/stat``; it emits ``up`` (1 when the process exists and is not a zombie, else 0) and
``restarts`` (a running count), without labels, then a Heartbeat. A process is known by its pid
and its start time, so a restart is counted even if the new process got the old pid back. A
process that merely died is ``up = 0``, not a restart; the next process to appear is.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from controller.analysis.observation import Observation, Sink
from controller.clock import Clock
from controller.logs import get_logger
from controller.observe.source import PollingSource
from controller.procfs import ProcessStat, read_stat

log = get_logger(__name__)


def pid_from_file(path: str | os.PathLike[str]) -> Callable[[], int | None]:
    """A ``pid_source`` reading a pidfile; no file means no process. A file that holds no pid raises ValueError."""
    pidfile = Path(path)

    def read() -> int | None:
        try:
            text = pidfile.read_text().strip()
        except FileNotFoundError:
            return None
        return int(text) if text else None

    return read


class ProcessObserver(PollingSource):
    """Checks the bot's process every ``interval`` Clock seconds."""

    def __init__(self, *, clock: Clock, sink: Sink, pid_source: Callable[[], int | None], interval: float = 1.0,
                 source: str = "process", proc: str | os.PathLike[str] = "/proc") -> None:
        super().__init__(source=source, target="the bot's process", clock=clock, sink=sink, interval=interval)
        self.pid_source = pid_source
        self.proc = Path(proc)
        self.restarts = 0
        self._known: ProcessStat | None = None  # the last process seen
        self._up: bool | None = None

    async def read_once(self) -> bool | None:
        """One check: ``up``, ``restarts``, a Heartbeat. Returns whether the process is up (None: could not tell)."""
        ts = self.clock.time()
        if not self.proc.is_dir():
            self.fail(ts, f"no {self.proc}: process checks need Linux")
            return None
        try:
            pid = self.pid_source()
            stat = read_stat(pid, self.proc) if pid is not None else None
        except Exception as exc:  # noqa: BLE001 - a pid source that fails is a source that cannot be read
            self.fail(ts, f"cannot tell the bot's pid or state: {type(exc).__name__}: {exc}")
            return None
        if stat is not None and self._known is not None and \
                (stat.pid, stat.start_ticks) != (self._known.pid, self._known.start_ticks):
            self.restarts += 1
            log.warning("bot_process_restarted", pid=stat.pid, previous_pid=self._known.pid,
                        restarts=self.restarts)
        self._known = stat or self._known
        up = stat is not None and stat.alive
        if up != self._up:
            log.log(logging.INFO if up else logging.WARNING, "bot_process_up" if up else "bot_process_down",
                    pid=pid, state=stat.state if stat else "absent")
            self._up = up
        self.sink(Observation(self.source, "up", (), 1.0 if up else 0.0, ts))
        self.sink(Observation(self.source, "restarts", (), float(self.restarts), ts))
        self.beat(ts)
        return up
