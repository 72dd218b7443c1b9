"""PromQLSource against a server speaking Prometheus' HTTP API (``/api/v1/query``) over real HTTP.

The answers are the documented JSON envelopes: ``{"status": "success", "data": {"resultType":
..., "result": ...}}`` and ``{"status": "error", "errorType": ..., "error": ...}`` with the status
codes Prometheus uses (400 bad_data, 422 execution, 503 timeout).
"""

from __future__ import annotations

import asyncio
import math

import pytest
from aiohttp import web

from controller.analysis.observation import Heartbeat
from controller.observe.promql import PromQLSource
from tests.support.http import app_answering, free_port

P95 = 'histogram_quantile(0.95, sum by (le) (rate(strategy_signal_latency_seconds_bucket[5m])))'
APPLIED = "strategy_leverage_applied"


def success(result_type: str, result) -> tuple[int, dict]:
    return 200, {"status": "success", "data": {"resultType": result_type, "result": result}}


def vector(*elements: tuple[dict, str], at: float) -> tuple[int, dict]:
    return success("vector", [{"metric": metric, "value": [at, value]} for metric, value in elements])


class FakePrometheus:
    """Answers each expression from ``answers`` (``expr -> (status, body)``, or a callable of the
    request's ``time``), and records what it was asked."""

    def __init__(self, answers: dict) -> None:
        self.answers = answers
        self.asked: list[tuple[str, float]] = []

    async def handle(self, request: web.Request) -> web.Response:
        expr, at = request.query["query"], float(request.query["time"])
        self.asked.append((expr, at))
        answer = self.answers[expr]
        status, body = answer(at) if callable(answer) else answer
        if isinstance(body, str):
            return web.Response(status=status, text=body, content_type="text/html")
        return web.json_response(body, status=status)


@pytest.fixture
def prometheus():
    return FakePrometheus({})


@pytest.fixture
async def base_url(serve, prometheus) -> str:
    return await serve(app_answering(prometheus.handle, "/api/v1/query"))


async def test_an_instant_vector_becomes_observations_named_by_the_key_with_the_series_labels(
        base_url, prometheus, clock, recorder):
    prometheus.answers[APPLIED] = lambda at: vector(
        ({"__name__": APPLIED, "symbol": "BTCUSDT", "job": "bot"}, "5"),
        ({"__name__": APPLIED, "symbol": "SOLUSDT", "job": "bot"}, "3"), at=at)
    source = PromQLSource(base_url, {"leverage_applied": APPLIED}, clock=clock, sink=recorder)
    assert await source.read_once() is True
    assert prometheus.asked == [(APPLIED, pytest.approx(clock.time(), abs=1e-3))]
    btc, sol, heartbeat = recorder.items
    assert (btc.source, btc.metric, btc.labels, btc.value) == (
        "bot", "leverage_applied", (("job", "bot"), ("symbol", "BTCUSDT")), 5.0)
    assert sol.label("symbol") == "SOLUSDT" and sol.value == 3.0
    assert btc.ts == pytest.approx(clock.time(), abs=1e-3)
    assert heartbeat == Heartbeat("bot", clock.time())


async def test_a_scalar_becomes_one_observation_without_labels(base_url, prometheus, clock, recorder):
    prometheus.answers["scalar(up)"] = lambda at: success("scalar", [at, "0.125"])
    await PromQLSource(base_url, {"p95": "scalar(up)"}, clock=clock, sink=recorder).read_once()
    [p95] = recorder.observations()
    assert (p95.metric, p95.labels, p95.value) == ("p95", (), 0.125)


async def test_special_float_values_are_read_as_prometheus_writes_them(base_url, prometheus, clock, recorder):
    prometheus.answers[P95] = lambda at: vector(({}, "NaN"), ({"x": "1"}, "+Inf"), at=at)
    await PromQLSource(base_url, {"p95": P95}, clock=clock, sink=recorder).read_once()
    nan, inf = recorder.observations()
    assert math.isnan(nan.value) and inf.value == math.inf


async def test_an_empty_vector_is_no_observation_and_the_source_still_answered(base_url, prometheus, clock, recorder):
    prometheus.answers[P95] = lambda at: vector(at=at)
    assert await PromQLSource(base_url, {"p95": P95}, clock=clock, sink=recorder).read_once() is True
    assert recorder.items == [Heartbeat("bot", clock.time())]


async def test_an_error_answer_fails_the_heartbeat_with_prometheus_words_and_keeps_the_other_answers(
        base_url, prometheus, clock, recorder):
    prometheus.answers["rate(x[5m]"] = (400, {"status": "error", "errorType": "bad_data",
                                              "error": "1:11: parse error: unclosed left parenthesis"})
    prometheus.answers[APPLIED] = lambda at: vector(({"symbol": "BTCUSDT"}, "5"), at=at)
    source = PromQLSource(base_url, {"broken": "rate(x[5m]", "applied": APPLIED}, clock=clock, sink=recorder)
    assert await source.read_once() is False
    applied, heartbeat = recorder.items
    assert applied.metric == "applied" and applied.value == 5
    assert not heartbeat.ok
    assert heartbeat.error == "broken: bad_data: 1:11: parse error: unclosed left parenthesis"


@pytest.mark.parametrize(("answer", "error"), [
    ((503, {"status": "error", "errorType": "timeout", "error": "query timed out in expression evaluation"}),
     "p95: timeout: query timed out in expression evaluation"),
    ((422, {"status": "error", "errorType": "execution", "error": "found duplicate series for the match group"}),
     "p95: execution: found duplicate series for the match group"),
    ((502, "<html><body>Bad Gateway</body></html>"), "p95: HTTP 502 Bad Gateway: not a Prometheus API response"),
    (success("matrix", []), "p95: bad_response: resultType 'matrix' is not an instant vector or scalar"),
])
async def test_failures_are_a_failed_heartbeat_and_no_observation(base_url, prometheus, clock, recorder, answer,
                                                                   error):
    prometheus.answers[P95] = answer
    assert await PromQLSource(base_url, {"p95": P95}, clock=clock, sink=recorder).read_once() is False
    [heartbeat] = recorder.items
    assert not heartbeat.ok and heartbeat.error.startswith(error)


async def test_a_server_that_is_not_prometheus_or_not_there_is_a_failed_heartbeat(clock, recorder, serve):
    other = await serve(web.Application())  # answers 404 to everything: not a Prometheus
    source = PromQLSource(other, {"p95": P95}, clock=clock, sink=recorder)
    assert await source.read_once() is False
    assert recorder.heartbeats[0].error == "p95: HTTP 404 Not Found: not a Prometheus API response"
    recorder.clear()
    source = PromQLSource(f"http://127.0.0.1:{free_port()}", {"p95": P95}, clock=clock, sink=recorder)
    assert await source.read_once() is False
    assert recorder.heartbeats[0].error.startswith("p95: unreachable: ")


async def test_a_server_that_does_not_answer_in_time_is_a_timeout(serve, clock, recorder):
    released = asyncio.Event()

    async def hang(request: web.Request) -> web.Response:
        await released.wait()
        return web.json_response({})

    url = await serve(app_answering(hang, "/api/v1/query"))
    try:
        source = PromQLSource(url, {"p95": P95}, clock=clock, sink=recorder, timeout=0.2)
        assert await source.read_once() is False
    finally:
        released.set()
    assert recorder.heartbeats[0].error == "p95: timeout: no answer within 0.2 s"


async def test_run_evaluates_at_the_clock_s_time_every_interval(base_url, prometheus, clock, recorder):
    prometheus.answers[P95] = lambda at: vector(({}, "0.2"), at=at)
    task = asyncio.create_task(PromQLSource(base_url, {"p95": P95}, clock=clock, sink=recorder, interval=30).run(),
                               name="test-promql")
    try:
        first = await recorder.heartbeat(1)
        clock.advance(30)
        second = await recorder.heartbeat(2)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert first.ok and second.ok and second.ts == first.ts + 30
    assert [at for _, at in prometheus.asked] == [pytest.approx(first.ts, abs=1e-3),
                                                  pytest.approx(second.ts, abs=1e-3)]
    assert [o.ts for o in recorder.observations()] == [pytest.approx(first.ts, abs=1e-3),
                                                       pytest.approx(second.ts, abs=1e-3)]
