"""systemd's notify protocol (sd_notify) without libsystemd: readiness, status, reload, stop, watchdog.

systemd passes ``NOTIFY_SOCKET`` (a path, or ``@name`` for an abstract socket) to a
``Type=notify`` / ``Type=notify-reload`` service, and ``WATCHDOG_USEC`` / ``WATCHDOG_PID`` when
``WatchdogSec=`` is set. Messages are newline-separated ``KEY=VALUE`` lines in one datagram.
Outside systemd (no ``NOTIFY_SOCKET``) every call is a no-op, and a failed send is logged,
never raised: telling systemd must never be what stops the daemon.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable, Mapping

from controller.logs import get_logger

log = get_logger(__name__)


class Notifier:
    """Sends sd_notify messages to ``address`` (None: nowhere); ``watchdog_usec`` enables pings."""

    def __init__(self, address: str | None, *, watchdog_usec: int | None = None) -> None:
        self.address = address
        self._watchdog_usec = watchdog_usec if address is not None else None
        self._socket: socket.socket | None = None
        self._failing = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Notifier:
        """The notifier systemd's environment describes; the watchdog is ours only if
        ``WATCHDOG_PID`` is unset or names this process (a child must not ping for its parent)."""
        address = environ.get("NOTIFY_SOCKET") or None
        if address is not None and not address.startswith(("/", "@")):
            log.warning("sd_notify_unsupported_socket", socket=address,
                        reason="only a path or an @abstract socket is supported")
            address = None
        return cls(address, watchdog_usec=_watchdog_usec(environ))

    @property
    def enabled(self) -> bool:
        return self.address is not None

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between watchdog pings: half of ``WATCHDOG_USEC``, as sd_watchdog_enabled(3)
        recommends; None when the watchdog is off."""
        return None if self._watchdog_usec is None else self._watchdog_usec / 2 / 1_000_000

    def ready(self, status: str | None = None) -> None:
        """Startup (or a reload) is complete: systemd considers the service started."""
        self._send({"READY": "1", "STATUS": status})

    def status(self, text: str) -> None:
        """A one-line status `systemctl status` shows."""
        self._send({"STATUS": text})

    def watchdog(self) -> None:
        self._send({"WATCHDOG": "1"})

    def reloading(self) -> None:
        """A reload began; send `ready` when it is done. ``MONOTONIC_USEC`` (CLOCK_MONOTONIC) is
        what systemd >= 253 requires for ``Type=notify-reload``; older ones ignore it."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self._send({"RELOADING": "1", "MONOTONIC_USEC": str(usec)})

    def stopping(self, status: str | None = None) -> None:
        self._send({"STOPPING": "1", "STATUS": status})

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def _send(self, fields: Mapping[str, str | None]) -> bool:
        if self.address is None:
            return False
        # A value must stay on its line: the protocol is one KEY=VALUE per line.
        message = "\n".join(f"{key}={' '.join(value.splitlines())}" for key, value in fields.items()
                            if value is not None)
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._socket.setblocking(False)
            self._socket.sendto(message.encode(), target)
        except OSError as error:
            if not self._failing:  # once per run of failures, not once per ping
                log.warning("sd_notify_failed", socket=self.address, error=str(error))
                self._failing = True
            return False
        if self._failing:
            log.info("sd_notify_recovered", socket=self.address)
            self._failing = False
        return True


def _watchdog_usec(environ: Mapping[str, str]) -> int | None:
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
        pid = environ.get("WATCHDOG_PID")
        ours = pid is None or int(pid) == os.getpid()
    except ValueError:
        return None
    return usec if usec > 0 and ours else None


async def watchdog_loop(notifier: Notifier, is_healthy: Callable[[], bool]) -> None:
    """Ping systemd's watchdog every `Notifier.watchdog_interval` while ``is_healthy()``; withhold
    pings otherwise so systemd restarts a wedged daemon. Runs until cancelled; returns at once
    when the watchdog is off.

    The cadence is real (event-loop) time: the watchdog is systemd's wall clock, not the
    simulated clock the engines may run on.
    """
    interval = notifier.watchdog_interval
    if interval is None:
        return
    withheld = False
    while True:
        try:
            healthy, reason = bool(is_healthy()), ""
        except Exception as error:  # a broken health check is a sick daemon, not a dead loop
            healthy, reason = False, f"health check raised {type(error).__name__}: {error}"
        if healthy:
            notifier.watchdog()
            if withheld:
                log.info("watchdog_resumed")
                withheld = False
        elif not withheld:
            log.warning("watchdog_withheld", reason=reason or "the daemon reports itself unhealthy")
            withheld = True
        await asyncio.sleep(interval)
