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

from controller.analysis.observation import Heartbeat, Observation, Sink
from controller.clock import Clock
from controller.observe.polling import poll
from controller.procfs import ProcessStat, read_stat

log = logging.getLogger(__name__)


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


class ProcessObserver:
    """Checks the bot's process every ``interval`` Clock seconds."""

    def __init__(self, *, clock: Clock, sink: Sink, pid_source: Callable[[], int | None], interval: float = 1.0,
                 source: str = "process", proc: str | os.PathLike[str] = "/proc") -> None:
        if interval <= 0:
            raise ValueError("interval is a positive number of seconds")
        self.clock = clock
        self.sink = sink
        self.pid_source = pid_source
        self.interval = interval
        self.source = source
        self.proc = Path(proc)
        self.restarts = 0
        self._known: ProcessStat | None = None  # the last process seen
        self._up: bool | None = None

    async def run(self) -> None:
        await poll(self.clock, self.interval, self.check_once)

    async def check_once(self) -> bool | None:
        """One check: ``up``, ``restarts``, a Heartbeat. Returns whether the process is up (None: could not tell)."""
        ts = self.clock.time()
        if not self.proc.is_dir():
            self.sink(Heartbeat(self.source, ts, ok=False, error=f"no {self.proc}: process checks need Linux"))
            return None
        try:
            pid = self.pid_source()
            stat = read_stat(pid, self.proc) if pid is not None else None
        except Exception as exc:  # noqa: BLE001 - a pid source that fails is a source that cannot be read
            error = f"cannot tell the bot's pid or state: {type(exc).__name__}: {exc}"
            log.warning("process_check_failed error=%s", error)
            self.sink(Heartbeat(self.source, ts, ok=False, error=error))
            return None
        if stat is not None and self._known is not None and \
                (stat.pid, stat.start_ticks) != (self._known.pid, self._known.start_ticks):
            self.restarts += 1
            log.warning("bot_process_restarted pid=%d previous_pid=%d restarts=%d", stat.pid, self._known.pid,
                        self.restarts)
        self._known = stat or self._known
        up = stat is not None and stat.alive
        if up != self._up:
            log.log(logging.INFO if up else logging.WARNING, "bot_process_%s pid=%s state=%s",
                    "up" if up else "down", pid, stat.state if stat else "absent")
            self._up = up
        self.sink(Observation(self.source, "up", (), 1.0 if up else 0.0, ts))
        self.sink(Observation(self.source, "restarts", (), float(self.restarts), ts))
        self.sink(Heartbeat(self.source, ts))
        return up
