"""SIGTERM, SIGHUP and sd_notify, tested on `canaryctl run` with real signals and a real notify socket.

systemd's side is an AF_UNIX datagram socket bound in tmp_path; the daemon gets it as
NOTIFY_SOCKET with WATCHDOG_USEC, the way a ``Type=notify-reload`` unit with ``WatchdogSec=``
starts it. The policies folder is a copy, so that a file in it can be broken.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import shutil
import signal
import socket
import time

import aiohttp
import pytest

from tests.daemon.harness import log_events, poll, prepare_database, sim_config
from tests.support.checkout import POLICIES


class NotifySocket:
    """systemd's end: every datagram the daemon sends, parsed into its KEY=VALUE fields."""

    def __init__(self, path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.setblocking(False)
        self.seen: list[dict[str, str]] = []

    async def next(self, timeout: float = 10.0) -> dict[str, str]:
        async with asyncio.timeout(timeout):
            raw = (await asyncio.get_running_loop().sock_recv(self.sock, 65536)).decode()
        fields = dict(line.split("=", 1) for line in raw.splitlines() if "=" in line)
        self.seen.append(fields)
        return fields

    async def until(self, key: str, timeout: float = 10.0) -> list[dict[str, str]]:
        """Messages up to and including the first with ``key``; fails after ``timeout``."""
        got = []
        deadline = time.monotonic() + timeout
        while True:
            fields = await self.next(max(0.01, deadline - time.monotonic()))
            got.append(fields)
            if key in fields:
                return got

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify(tmp_path):
    sock = NotifySocket(tmp_path / "notify.sock")
    try:
        yield sock
    finally:
        sock.close()


async def test_notify_reload_and_stop_with_real_signals(tmp_path, processes, notify):
    policies = tmp_path / "policies"
    shutil.copytree(POLICIES, policies)
    db_url = await prepare_database(tmp_path / "canary.db", releases=False)
    config = sim_config(tmp_path, policies_dir=policies)
    log = tmp_path / "daemon.log"
    daemon = processes.start_daemon(db_url=db_url, config=config, state_dir=tmp_path / "state", log=log, speed=10,
                                    extra_env={"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "400000"})

    def logged(event: str):
        async def probe():
            return [e for e in log_events(log) if e.get("event") == event]
        return probe

    def dead():
        code = daemon.poll()
        return None if code is None else f"the daemon exited {code}:\n{log.read_text(errors='replace')[-3000:]}"

    # READY=1 with a STATUS, then watchdog pings (every WATCHDOG_USEC / 2) while the loop turns.
    ready = (await notify.until("READY", timeout=30))[-1]
    assert ready["READY"] == "1" and ready.get("STATUS", "").startswith("watching")
    pings = 0
    started = time.monotonic()
    while pings < 3:
        if (await notify.next(5)).get("WATCHDOG") == "1":
            pings += 1
    assert time.monotonic() - started < 3  # 0.2 s apart, not one per minute
    assert any("STATUS" in m and "idle" in m["STATUS"] for m in notify.seen), notify.seen

    # SIGHUP with valid policies: RELOADING=1 (with MONOTONIC_USEC), then READY=1, and the log says so.
    daemon.send_signal(signal.SIGHUP)
    got = await notify.until("RELOADING")
    assert got[-1]["RELOADING"] == "1" and int(got[-1]["MONOTONIC_USEC"]) > 0
    got = await notify.until("READY")
    assert got[-1]["STATUS"] == "policies reloaded"
    (reloaded,) = await poll(logged("policies_reloaded"), timeout=5, what="policies_reloaded in the log", alive=dead)
    assert reloaded["folder"] == str(policies)

    # An invalid policy file, then SIGHUP: refused, the old set stays, the daemon keeps running.
    (policies / "stage-c.yaml").write_text("policies:\n  - name: broken\n    metric: [not, a, metric]\n")
    daemon.send_signal(signal.SIGHUP)
    await notify.until("RELOADING")
    got = await notify.until("READY")
    assert "refused" in got[-1]["STATUS"]
    (refused,) = await poll(logged("policy_reload_refused"), timeout=5, what="policy_reload_refused in the log",
                            alive=dead)
    assert "stage-c.yaml" in refused["error"] and refused["level"] == "error"
    assert len(await logged("policies_reloaded")()) == 1  # the refused reload did not say reloaded
    assert daemon.poll() is None
    assert any(m.get("WATCHDOG") == "1" for m in await notify.until("WATCHDOG", timeout=3))  # still turning

    # SIGTERM: STOPPING=1, then exit status 0 within 10 s.
    stopped_at = time.monotonic()
    daemon.send_signal(signal.SIGTERM)
    got = await notify.until("STOPPING")
    assert got[-1]["STOPPING"] == "1"

    async def exited():
        return daemon.poll() is not None
    await poll(exited, timeout=10, what="the daemon to exit after SIGTERM")
    assert daemon.returncode == 0, log.read_text(errors="replace")[-3000:]
    assert time.monotonic() - stopped_at < 10


async def test_a_reload_parses_off_the_loop_and_a_broken_file_keeps_the_old_set(tmp_path, processes, notify):
    """The policy files are read in a thread: while one is still parsing (held at the failpoint
    ``policy.reload.read`` by a lock this test owns) the loop turns on, /healthz answers and the
    watchdog pings; the broken file then leaves the old set in force and READY=1 is sent again."""
    policies = tmp_path / "policies"
    shutil.copytree(POLICIES, policies)
    db_url = await prepare_database(tmp_path / "canary.db", releases=False)
    config = sim_config(tmp_path, policies_dir=policies)
    log = tmp_path / "daemon.log"
    lock_path = tmp_path / "parse.lock"
    with open(lock_path, "w") as lock:  # noqa: PTH123
        fcntl.flock(lock, fcntl.LOCK_EX)  # the parse waits until this is released
        daemon = processes.start_daemon(
            db_url=db_url, config=config, state_dir=tmp_path / "state", log=log, speed=10,
            failpoints=f"policy.reload.read=hold:{lock_path}",
            extra_env={"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "400000"})
        await notify.until("READY", timeout=30)

        async def ready_logged():
            return [e for e in log_events(log) if e.get("event") == "daemon_ready"]

        [ready] = await poll(ready_logged, timeout=5, what="daemon_ready in the log")  # logged after READY=1

        (policies / "stage-c.yaml").write_text("policies:\n  - name: broken\n    metric: [not, a, metric]\n")
        daemon.send_signal(signal.SIGHUP)
        await notify.until("RELOADING")
        during = []
        while sum(m.get("WATCHDOG") == "1" for m in during) < 3:  # the loop turns while the file parses
            during.append(await notify.next(5))
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{ready['admin_port']}/healthz") as reply:
                healthy = reply.status
        during += drain(notify)

        assert not any("READY" in m for m in during), during  # the reload has not finished
        assert healthy == 200
        fcntl.flock(lock, fcntl.LOCK_UN)

    got = await notify.until("READY")
    assert got[-1]["STATUS"] == "policy reload refused; previous policies in force"
    [refused] = [e for e in log_events(log) if e.get("event") == "policy_reload_refused"]
    assert "stage-c.yaml" in refused["error"]
    assert daemon.poll() is None


def drain(notify: NotifySocket) -> list[dict[str, str]]:
    """The messages already queued on the notify socket, parsed."""
    got = []
    with contextlib.suppress(BlockingIOError):
        while True:
            raw = notify.sock.recv(65536).decode()
            got.append(dict(line.split("=", 1) for line in raw.splitlines() if "=" in line))
    return got
