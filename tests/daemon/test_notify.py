"""sd_notify against a real AF_UNIX datagram socket standing in for systemd's notify socket."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid

import pytest

from controller.daemon.notify import Notifier, watchdog_loop
from controller.logs import fields_of


@pytest.fixture
def notify_socket(tmp_path):
    """systemd's side: a bound, non-blocking datagram socket and the NOTIFY_SOCKET naming it."""
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.setblocking(False)
        yield sock, str(path)


async def receive(sock: socket.socket) -> str:
    """The next datagram, awaited on the event loop (no polling)."""
    async with asyncio.timeout(5):
        return (await asyncio.get_running_loop().sock_recv(sock, 4096)).decode()


def drain(sock: socket.socket) -> list[str]:
    """Every datagram already queued; delivery on a local datagram socket is synchronous."""
    got = []
    with contextlib.suppress(BlockingIOError):
        while True:
            got.append(sock.recv(4096).decode())
    return got


async def test_ready_sends_ready_and_a_one_line_status(notify_socket):
    sock, address = notify_socket
    notifier = Notifier.from_env({"NOTIFY_SOCKET": address})
    notifier.ready("3 policies loaded\nexchange connected")
    assert await receive(sock) == "READY=1\nSTATUS=3 policies loaded exchange connected"
    notifier.ready()
    assert await receive(sock) == "READY=1"


async def test_status_watchdog_and_stopping_each_send_one_datagram(notify_socket):
    sock, address = notify_socket
    notifier = Notifier.from_env({"NOTIFY_SOCKET": address})
    notifier.status("rollout 7: stage B, 40 min left")
    notifier.watchdog()
    notifier.stopping("draining")
    notifier.stopping()
    assert [await receive(sock) for _ in range(4)] == [
        "STATUS=rollout 7: stage B, 40 min left", "WATCHDOG=1", "STOPPING=1\nSTATUS=draining", "STOPPING=1"]


async def test_reloading_carries_the_monotonic_clock_in_microseconds(notify_socket):
    sock, address = notify_socket
    notifier = Notifier.from_env({"NOTIFY_SOCKET": address})
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    notifier.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    reloading, monotonic = (await receive(sock)).split("\n")
    assert reloading == "RELOADING=1"
    key, usec = monotonic.split("=")
    assert key == "MONOTONIC_USEC" and before <= int(usec) <= after


async def test_an_abstract_socket_is_reached_by_its_at_name():
    name = f"canary-notify-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.setblocking(False)
        Notifier.from_env({"NOTIFY_SOCKET": "@" + name}).ready("up")
        assert await receive(sock) == "READY=1\nSTATUS=up"


def test_without_notify_socket_nothing_is_opened_or_sent(monkeypatch):
    def no_socket(*args, **kwargs):
        raise AssertionError("a socket was opened without NOTIFY_SOCKET")

    monkeypatch.setattr(socket, "socket", no_socket)
    notifier = Notifier.from_env({"WATCHDOG_USEC": "30000000"})
    assert not notifier.enabled and notifier.watchdog_interval is None
    notifier.ready("up")
    notifier.status("x")
    notifier.watchdog()
    notifier.reloading()
    notifier.stopping("bye")


def test_the_watchdog_interval_is_half_of_watchdog_usec_for_this_process():
    env = {"NOTIFY_SOCKET": "/run/notify", "WATCHDOG_USEC": "30000000"}
    assert Notifier.from_env(env).watchdog_interval == 15.0
    assert Notifier.from_env({**env, "WATCHDOG_PID": str(os.getpid())}).watchdog_interval == 15.0


@pytest.mark.parametrize("overrides", [{"WATCHDOG_PID": str(os.getpid() + 1)}, {"WATCHDOG_USEC": "0"},
                                       {"WATCHDOG_USEC": "soon"}, {"WATCHDOG_PID": "me"}])
async def test_the_watchdog_is_off_for_another_process_or_a_bad_value(overrides):
    notifier = Notifier.from_env({"NOTIFY_SOCKET": "/run/notify", "WATCHDOG_USEC": "30000000", **overrides})
    assert notifier.watchdog_interval is None
    async with asyncio.timeout(1):  # returns at once instead of pinging for someone else
        await watchdog_loop(notifier, lambda: True)


def test_a_socket_that_does_not_exist_is_logged_once_and_never_raises(tmp_path, caplog):
    notifier = Notifier.from_env({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    with caplog.at_level(logging.INFO, logger="controller.daemon.notify"):
        notifier.ready("up")
        notifier.watchdog()
        notifier.stopping()
    (record,) = caplog.records
    assert record.getMessage() == "sd_notify_failed"
    assert fields_of(record)["socket"] == str(tmp_path / "gone.sock") and fields_of(record)["error"]


async def test_the_watchdog_pings_while_healthy_and_withholds_pings_while_not(notify_socket):
    sock, address = notify_socket
    notifier = Notifier.from_env({"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "20000"})  # a ping every 10 ms
    healthy = True
    unhealthy_checks = 0
    checked_while_unhealthy = asyncio.Event()

    def is_healthy() -> bool:
        nonlocal unhealthy_checks
        if not healthy:
            unhealthy_checks += 1
            if unhealthy_checks == 3:
                checked_while_unhealthy.set()
        return healthy

    task = asyncio.create_task(watchdog_loop(notifier, is_healthy), name="watchdog")
    try:
        assert [await receive(sock) for _ in range(2)] == ["WATCHDOG=1", "WATCHDOG=1"]
        healthy = False
        drain(sock)  # pings sent before the switch
        async with asyncio.timeout(5):
            await checked_while_unhealthy.wait()
        assert drain(sock) == []
        healthy = True
        assert await receive(sock) == "WATCHDOG=1"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_health_check_that_raises_withholds_the_ping(notify_socket, caplog):
    sock, address = notify_socket
    notifier = Notifier.from_env({"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "20000"})
    checked = asyncio.Event()

    def is_healthy() -> bool:
        checked.set()
        raise RuntimeError("store unreachable")

    with caplog.at_level(logging.WARNING, logger="controller.daemon.notify"):
        task = asyncio.create_task(watchdog_loop(notifier, is_healthy), name="watchdog")
        try:
            async with asyncio.timeout(5):
                await checked.wait()
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    assert drain(sock) == []
    withheld = [fields_of(r)["reason"] for r in caplog.records if r.getMessage() == "watchdog_withheld"]
    assert withheld == ["health check raised RuntimeError: store unreachable"]
