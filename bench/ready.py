"""How long `canaryctl run` takes from spawn to telling systemd it is ready (READY=1).

The daemon is a fresh process on a fresh SQLite store at the current schema, with the embedded
simulator and the shipped policies, given NOTIFY_SOCKET naming an AF_UNIX datagram socket bound
here, as a ``Type=notify`` unit would be; the figure is wall time from spawn to the datagram
holding READY=1. It is stopped with SIGTERM after each run. Median of 5 runs (quick: 2).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from controller import shipped
from controller.store.database import Database, resolve_url
from controller.store.schema import upgrade

ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT = 60.0  # wall seconds: a daemon not ready by then is a failed run, not a figure
STOP_TIMEOUT = 30.0


def measure(quick: bool) -> dict[str, float | int | None]:
    runs = 2 if quick else 5
    with tempfile.TemporaryDirectory(prefix="bench-ready-") as folder:
        times = [one_run(Path(folder) / f"run{n}") for n in range(runs)]
    return {"ready_ms": statistics.median(times) * 1000}


def one_run(folder: Path) -> float:
    """Wall seconds from spawning the daemon to its READY=1."""
    folder.mkdir(parents=True)
    db_url = f"sqlite:///{folder / 'canary.db'}"
    asyncio.run(_fresh_store(db_url))
    config = folder / "controller.yaml"
    config.write_text(yaml.safe_dump({"environments": {"sim": {"kind": "sim"}}, "admin": {"port": 0},
                                      "policies_dir": str(shipped.policies_dir()),
                                      "log": {"level": "error", "format": "json"}}), encoding="utf-8")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(folder / "notify.sock"))
    sock.settimeout(READY_TIMEOUT)
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID",
                                                            "CANARY_FAILPOINTS")}
    env["NOTIFY_SOCKET"] = str(folder / "notify.sock")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    args = [sys.executable, "-m", "controller", "--db", db_url, "--config", str(config), "run",
            "--state-dir", str(folder / "state")]
    with open(folder / "daemon.log", "wb") as output:  # noqa: PTH123 - the child's output, for a post-mortem
        began = time.monotonic()
        daemon = subprocess.Popen(args, stdout=output, stderr=subprocess.STDOUT, env=env, cwd=folder)
        try:
            ready = _await_ready(sock, began, daemon)
        finally:
            sock.close()
            if daemon.poll() is None:
                daemon.send_signal(signal.SIGTERM)
                try:
                    daemon.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    daemon.kill()
                    daemon.wait()
    return ready - began


def _await_ready(sock: socket.socket, began: float, daemon: subprocess.Popen) -> float:
    """The monotonic time the READY=1 datagram arrived; raises if the daemon dies or stays silent."""
    while True:
        try:
            raw = sock.recv(65536)
        except TimeoutError:
            raise RuntimeError(f"canaryctl run sent no READY=1 in {READY_TIMEOUT:g} s "
                               f"(exit status {daemon.poll()})") from None
        if "READY=1" in raw.decode(errors="replace").splitlines():
            return time.monotonic()
        if daemon.poll() is not None:
            raise RuntimeError(f"canaryctl run exited with status {daemon.returncode} before READY=1")


async def _fresh_store(url: str) -> None:
    db = Database(resolve_url(url))
    try:
        await upgrade(db)
    finally:
        await db.close()
