"""The admin server on a real ephemeral port, asked with aiohttp's client."""

from __future__ import annotations

import socket
from decimal import Decimal

import aiohttp
import pytest
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from controller.daemon.admin import AdminServer
from controller.logs import fields_of
from controller.metrics import ControllerMetrics


class Daemon:
    """The callbacks the admin server reads; a test sets an answer, or an exception to raise."""

    def __init__(self) -> None:
        self.healthy: tuple[bool, str] | Exception = (True, "")
        self.ready: tuple[bool, str] | Exception = (True, "")
        self.status: dict | Exception = {"rollouts": [{"id": 7, "stage": "B"}], "capital": Decimal("1000.50")}

    def server(self, metrics: ControllerMetrics) -> AdminServer:
        return AdminServer(metrics=metrics, status=lambda: _answer(self.status),
                           ready=lambda: _answer(self.ready), healthy=lambda: _answer(self.healthy))


def _answer(value):
    if isinstance(value, Exception):
        raise value
    return value


@pytest.fixture
def daemon() -> Daemon:
    return Daemon()


@pytest.fixture
def metrics() -> ControllerMetrics:
    metrics = ControllerMetrics()
    metrics.set_rollout_state(7, "v1.4.0", "running")
    return metrics


@pytest.fixture
async def admin(daemon, metrics):
    """``(base_url, client session)`` of a started server; stopped afterwards."""
    server = daemon.server(metrics)
    port = await server.start("127.0.0.1", 0)
    async with aiohttp.ClientSession() as session:
        yield f"http://127.0.0.1:{port}", session
    await server.stop()


async def get(admin, path: str) -> tuple[int, dict | str]:
    base, session = admin
    async with session.get(base + path) as response:
        body = await response.json() if response.content_type == "application/json" else await response.text()
        return response.status, body


async def test_metrics_are_the_prometheus_exposition_of_the_canary_metrics(admin):
    base, session = admin
    async with session.get(base + "/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == CONTENT_TYPE_LATEST
        text = await response.text()
    families = {family.name: family for family in text_string_to_metric_families(text)}
    assert "canary_rollout_state" in families and "canary_rollbacks" in families
    running = [s for s in families["canary_rollout_state"].samples if s.labels["state"] == "running"]
    assert [(s.labels["rollout"], s.value) for s in running] == [("7", 1.0)]


async def test_healthz_is_200_while_the_loop_turns_and_503_when_not_each_with_its_reason(admin, daemon):
    daemon.healthy = (True, "main loop last turned 0.2 s ago")
    assert await get(admin, "/healthz") == (200, {"ok": True, "reason": "main loop last turned 0.2 s ago"})
    daemon.healthy = (False, "main loop last turned 95 s ago")
    assert await get(admin, "/healthz") == (503, {"ok": False, "reason": "main loop last turned 95 s ago"})


async def test_readyz_is_200_when_ready_and_503_when_not_each_with_its_reason(admin, daemon):
    daemon.ready = (True, "1 rollout(s) under way")
    assert await get(admin, "/readyz") == (200, {"ok": True, "reason": "1 rollout(s) under way"})
    daemon.ready = (False, "exchange stream for account canary not connected")
    assert await get(admin, "/readyz") == (503, {"ok": False,
                                                 "reason": "exchange stream for account canary not connected"})


async def test_a_check_that_raises_fails_its_probe_with_the_error(admin, daemon):
    daemon.ready = RuntimeError("database is locked")
    assert await get(admin, "/readyz") == (
        503, {"ok": False, "reason": "the readiness check raised RuntimeError: database is locked"})


async def test_status_is_the_status_callback_as_json(admin):
    assert await get(admin, "/status") == (200, {"rollouts": [{"id": 7, "stage": "B"}], "capital": "1000.50"})


async def test_a_status_callback_that_raises_is_a_json_500_and_logged(admin, daemon, caplog):
    daemon.status = RuntimeError("rollout table unreadable, password=hunter2")
    status, body = await get(admin, "/status")
    assert status == 500
    assert body == {"error": "/status failed: RuntimeError: rollout table unreadable, password=***"}
    assert any(r.getMessage() == "admin_request_failed" and fields_of(r) == {"path": "/status"} and r.exc_info
               for r in caplog.records)


async def test_an_unknown_path_is_a_json_404(admin):
    assert await get(admin, "/rollouts") == (404, {"error": "Not Found", "path": "/rollouts"})


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
async def test_only_get_and_head_are_allowed(admin, method):
    base, session = admin
    async with session.request(method, base + "/status") as response:
        assert response.status == 405
        assert set(response.headers["Allow"].split(",")) == {"GET", "HEAD"}
        assert await response.json() == {"error": "Method Not Allowed", "path": "/status"}


async def test_head_answers_like_get_without_a_body(admin):
    base, session = admin
    async with session.head(base + "/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == CONTENT_TYPE_LATEST
        assert await response.read() == b""


async def test_start_twice_is_refused_and_stop_frees_the_port(metrics, daemon):
    server = daemon.server(metrics)
    port = await server.start()
    try:
        with pytest.raises(RuntimeError, match="call stop"):
            await server.start()
    finally:
        await server.stop()
    await server.stop()  # a second stop is a no-op
    with socket.socket() as sock:  # nothing listens any more: the port can be bound again
        sock.bind(("127.0.0.1", port))


async def test_with_a_token_every_route_wants_it_as_a_bearer(daemon):
    server = AdminServer(metrics=ControllerMetrics(), status=lambda: daemon.status, ready=lambda: daemon.ready,
                         healthy=lambda: daemon.healthy, token="s3cret-t0ken-0123456789")
    port = await server.start()
    try:
        async with aiohttp.ClientSession() as session:
            for route in ("/metrics", "/healthz", "/readyz", "/status"):
                url = f"http://127.0.0.1:{port}{route}"
                for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret-t0ken-0123456789"}):
                    async with session.get(url, headers=headers) as response:
                        assert response.status == 401, (route, headers)
                        assert "s3cret" not in await response.text()
                async with session.get(url, headers={"Authorization": "Bearer s3cret-t0ken-0123456789"}) as response:
                    assert response.status == 200, route
    finally:
        await server.stop()


async def test_a_finished_rollouts_series_leave_metrics_after_the_grace_period(daemon):
    from controller.metrics import FINISHED_STATES
    from controller.rollout.decide import TERMINAL
    from tests.support.clocks import make_clock

    assert FINISHED_STATES == {s.value for s in TERMINAL}
    clock = make_clock()
    metrics = ControllerMetrics(clock, finished_grace=3600)
    for rollout in (7, 8):
        metrics.runner_started(rollout)
        metrics.set_rollout_state(rollout, f"v{rollout}", "running")
        metrics.set_rollout_stage(rollout, f"v{rollout}", "C")
        metrics.set_stage_remaining(rollout, 60)
    metrics.set_rollout_state(7, "v7", "rolled_back")
    server = daemon.server(metrics)
    port = await server.start("127.0.0.1", 0)

    async def rollouts_on_metrics() -> dict[str, set[str]]:
        async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/metrics") as response:
            exposition = await response.text()
        found: dict[str, set[str]] = {}
        for family in text_string_to_metric_families(exposition):
            for sample in family.samples:
                if "rollout" in sample.labels:
                    found.setdefault(family.name, set()).add(sample.labels["rollout"])
        return found

    try:
        labelled = {"canary_rollout_state", "canary_rollout_stage_info", "canary_stage_time_remaining_seconds",
                    "canary_runner_crashes", "canary_runner_crashes_created"}
        assert await rollouts_on_metrics() == {name: {"7", "8"} for name in labelled}
        clock.advance(3599)  # within the grace period: the last state is still there to see
        assert await rollouts_on_metrics() == {name: {"7", "8"} for name in labelled}
        clock.advance(1)
        assert await rollouts_on_metrics() == {name: {"8"} for name in labelled}  # 8 runs on
    finally:
        await server.stop()
