"""The bot's output from a log file, followed like ``tail -F``, fed to the exception detector.

The observer sends a Heartbeat after every read, including reads that found nothing: that is
what makes "zero exceptions" a measurement rather than an absence of data. A traceback at the end
of the file is complete once a read finds nothing new (a crashed process writes nothing
after its traceback).
"""

from __future__ import annotations

import asyncio
import io
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from controller.analysis.observation import Sink
from controller.clock import Clock
from controller.logs import get_logger
from controller.observe.source import PollingSource
from controller.observe.tracebacks import MAX_LINE, ExceptionDetector, report

log = get_logger(__name__)

TAIL = 64  # bytes before the read position kept to notice a file truncated and written again


class LogFileObserver(PollingSource):
    """Follows the log file at ``path`` like ``tail -F``, reading every ``interval`` Clock seconds:
    from its end (or ``offset``), through rotation (a new file at the path) and truncation (the
    file shrank, or the bytes before the read position changed: truncated and written again
    between two reads)."""

    def __init__(self, path: str | os.PathLike[str], *, clock: Clock, sink: Sink, interval: float = 1.0,
                 offset: int | None = None, source: str = "logs") -> None:
        super().__init__(source=source, target=str(path), clock=clock, sink=sink, interval=interval)
        self.path = Path(path)
        self.detector = ExceptionDetector()
        self._start = offset  # None: the end of the file found at the first read
        self._file: io.BufferedReader | None = None
        self._identity: tuple[int, int] | None = None
        self._partial = b""
        self._tail = b""  # the last bytes read, to notice a file truncated and written again past our position

    @asynccontextmanager
    async def holding(self) -> AsyncIterator[None]:
        """The file stays open across the reads of a run, and is closed when it ends."""
        try:
            yield
        finally:
            self.close()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    async def read_once(self) -> bool:
        """Read what was written since the last read; a Heartbeat either way. Returns whether the file could be read."""
        ts = self.clock.time()
        try:
            lines = await self._read_new(ts)
        except OSError as exc:
            self.close()
            self.fail(ts, f"cannot read {self.path}: {exc.strerror or exc}")
            return False
        if lines == 0 and self.detector.pending:  # a quiet pass: the traceback is complete
            report(self.detector.settle(), self.source, self.sink, str(self.path))
        self.beat(ts)
        return True

    async def _read_new(self, ts: float) -> int:
        if self._file is None:
            self._open(self._start)
            return await self._drain(ts)
        lines = 0
        try:
            status = os.stat(self.path)
        except FileNotFoundError:
            await self._drain(ts)  # moved away: its last writes still count
            raise
        if (status.st_dev, status.st_ino) != self._identity:  # rotated: a new file at the path
            lines += await self._drain(ts) + self._feed_partial(ts)
            self.close()
            self._open(0)
            log.info("log_file_rotated", path=str(self.path))
        elif status.st_size < self._file.tell() or not self._same_tail():  # truncated (and maybe written again)
            self._file.seek(0)
            self._partial = self._tail = b""
            log.info("log_file_truncated", path=str(self.path))
        return lines + await self._drain(ts)

    def _same_tail(self) -> bool:
        """The bytes just before the read position are still those read: the file was not rewritten."""
        position = self._file.tell()
        return os.pread(self._file.fileno(), len(self._tail), position - len(self._tail)) == self._tail

    def _open(self, start: int | None) -> None:
        try:
            handle = open(self.path, "rb")  # noqa: SIM115 - held open across reads, closed by close()
        except FileNotFoundError:
            self._start = 0  # a file that appears later is read from its beginning
            raise
        status = os.fstat(handle.fileno())
        position = status.st_size if start is None else min(start, status.st_size)
        handle.seek(position)
        self._tail = os.pread(handle.fileno(), min(TAIL, position), position - min(TAIL, position))
        self._file, self._identity, self._partial, self._start = handle, (status.st_dev, status.st_ino), b"", 0

    async def _drain(self, ts: float) -> int:
        lines = 0
        while chunk := self._file.read(256 * 1024):
            self._tail = (self._tail + chunk)[-TAIL:]
            *complete, self._partial = (self._partial + chunk).split(b"\n")
            for raw in complete:
                lines += 1
                report(self.detector.feed(raw.decode("utf-8", "replace"), ts), self.source, self.sink,
                        str(self.path))
            if len(self._partial) > MAX_LINE:
                lines += self._feed_partial(ts)
            await asyncio.sleep(0)  # a long backlog does not hold the loop
        return lines

    def _feed_partial(self, ts: float) -> int:
        if not self._partial:
            return 0
        raw, self._partial = self._partial, b""
        report(self.detector.feed(raw.decode("utf-8", "replace"), ts), self.source, self.sink, str(self.path))
        return 1
