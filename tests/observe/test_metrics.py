"""The /metrics scraper against the reference bot's real metrics server, and against broken peers."""

from __future__ import annotations

import asyncio
import math

import pytest
from aiohttp import web

from controller.analysis.histogram import histogram_quantile
from controller.clock import SimulatedClock
from controller.observe.metrics import MetricsScraper
from reference_bot import MetricsServer
from tests.support.bot import IN_PROCESS_SIM, observations, running, strategy
from tests.support.bot import histogram_quantile as bot_histogram_quantile
from tests.support.bot_process import CHECKLIST
from tests.support.clients import bot_account
from tests.support.clocks import make_clock
from tests.support.http import app_answering, free_port
from tests.support.simulator import make_sim

LATENCY = "strategy_signal_latency_seconds"


@pytest.fixture
def bot_clock() -> SimulatedClock:
    return make_clock(speed=1.0)


@pytest.fixture
async def exchange(bot_clock):
    """The bot's connection to a simulator of its own, set as for an in-process bot."""
    async with make_sim(clock=bot_clock, volatility=1.0, **IN_PROCESS_SIM) as simulator:
        client = bot_account(simulator, bot_clock)
        yield client
        await client.close()


async def test_a_running_bot_s_checklist_metrics_arrive_as_observations_with_their_labels(
        exchange, bot_clock, recorder):
    async with running(exchange, bot_clock, strategy()) as run:
        server = MetricsServer(run.bot.metrics)
        port = await server.start()
        try:
            await run.until(lambda: observations(run.bot, LATENCY) >= 3
                            and run.value("strategy_orders_total", outcome="filled") >= 1)
            await run.stop()  # the values stand still from here, so they can be compared
            scraper = MetricsScraper(f"http://127.0.0.1:{port}/metrics", clock=bot_clock, sink=recorder)
            before = bot_clock.time()
            assert await scraper.read_once() is True
        finally:
            await server.stop()

    *observed, heartbeat = recorder.items
    assert heartbeat.ok and heartbeat.source == "bot" and heartbeat.error is None
    assert {o.metric for o in observed} >= set(CHECKLIST)
    assert {o.ts for o in observed} == {heartbeat.ts} and heartbeat.ts >= before
    by_key = {(o.metric, o.labels): o.value for o in observed}
    assert by_key["strategy_leverage_applied", (("symbol", "SOLUSDT"),)] == 3
    assert by_key["strategy_bucket_allocation_ratio", (("bucket", "majors"),)] == 0.5
    assert by_key["strategy_orders_total", (("outcome", "filled"),)] >= 1  # a running total, not a delta
    assert by_key["strategy_leverage_mismatch_total", ()] == 0
    buckets = [(o.label("le"), o.value) for o in observed if o.metric == f"{LATENCY}_bucket"]
    assert ("+Inf", by_key[f"{LATENCY}_count", ()]) in buckets
    assert histogram_quantile(0.5, buckets) == pytest.approx(bot_histogram_quantile(0.5, run.bot, LATENCY))


async def test_a_dead_endpoint_is_a_failed_heartbeat_and_no_observation(clock, recorder):
    scraper = MetricsScraper(f"http://127.0.0.1:{free_port()}/metrics", clock=clock, sink=recorder)
    assert await scraper.read_once() is False
    [heartbeat] = recorder.items
    assert not heartbeat.ok and heartbeat.ts == clock.time()
    assert "connect" in heartbeat.error.lower()


async def test_an_http_error_is_a_failed_heartbeat_naming_the_status(serve, clock, recorder):
    async def unavailable(request: web.Request) -> web.Response:
        return web.Response(status=503, text="# HELP x y\nx 1\n")

    url = await serve(app_answering(unavailable, "/metrics"))
    assert await MetricsScraper(f"{url}/metrics", clock=clock, sink=recorder).read_once() is False
    assert [(h.ok, h.error) for h in recorder.items] == [(False, "HTTP 503 Service Unavailable")]


async def test_a_page_that_is_not_the_exposition_format_gives_no_observation_at_all(serve, clock, recorder):
    async def html(request: web.Request) -> web.Response:
        return web.Response(text="good_metric 1\n<html><body>502 Bad Gateway</body></html>\n",
                            content_type="text/html")

    url = await serve(app_answering(html, "/metrics"))
    assert await MetricsScraper(f"{url}/metrics", clock=clock, sink=recorder).read_once() is False
    [heartbeat] = recorder.items
    assert not heartbeat.ok and heartbeat.error.startswith("not the Prometheus text format")


async def test_a_peer_that_does_not_answer_in_time_is_a_failed_heartbeat(serve, clock, recorder):
    released = asyncio.Event()

    async def hang(request: web.Request) -> web.Response:
        await released.wait()
        return web.Response(text="x 1\n")

    url = await serve(app_answering(hang, "/metrics"))
    try:
        scraper = MetricsScraper(f"{url}/metrics", clock=clock, sink=recorder, timeout=0.2)
        assert await scraper.read_once() is False
    finally:
        released.set()
    assert [(h.ok, h.error) for h in recorder.items] == [(False, "no answer within 0.2 s")]


async def test_a_page_sent_in_many_chunks_is_read_whole(serve, clock, recorder):
    async def streamed(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/plain; version=0.0.4"})
        await response.prepare(request)
        for chunk in range(20):
            await response.write("".join(f'series{{chunk="{chunk}",n="{n}"}} {n}\n' for n in range(500)).encode())
        await response.write_eof()
        return response

    url = await serve(app_answering(streamed, "/metrics"))
    assert await MetricsScraper(f"{url}/metrics", clock=clock, sink=recorder).read_once() is True
    assert len(recorder.observations("series")) == 10_000
    # The whole scrape reaches the sink in one call (the evaluator judges it once it is all in).
    (batch,) = recorder.batches
    assert batch.source == "bot" and len(batch.observations) == 10_000


async def test_run_scrapes_every_interval_and_carries_on_after_a_failure(serve, clock, recorder):
    answers = iter([web.Response(status=500), web.Response(text="# TYPE up gauge\nup 1\nratio NaN\n")])

    async def page(request: web.Request) -> web.Response:
        return next(answers)

    url = await serve(app_answering(page, "/metrics"))
    task = asyncio.create_task(MetricsScraper(f"{url}/metrics", clock=clock, sink=recorder, interval=15).run(),
                               name="test-scraper")
    try:
        first = await recorder.heartbeat(1)
        assert not first.ok and first.error == "HTTP 500 Internal Server Error"
        clock.advance(15)
        second = await recorder.heartbeat(2)
        assert second.ok and second.ts == first.ts + 15
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    up, ratio = recorder.observations()
    assert (up.metric, up.value, up.ts) == ("up", 1.0, second.ts)
    assert ratio.metric == "ratio" and math.isnan(ratio.value)
    assert task.cancelled()


async def test_a_non_finite_value_on_the_bot_s_page_reaches_the_evaluator_which_rejects_and_counts_it(
        serve, clock):
    from controller.analysis.evaluator import Evaluator
    from controller.analysis.policy import PolicyFile
    from controller.analysis.verdict import Outcome
    from controller.config.yamlfile import load_model_text

    (usage,) = load_model_text(PolicyFile, """\
stage: A
policies:
  - name: usage-limit
    checklist: "A: usage within allocation"
    source: bot
    metric: strategy_bucket_usage_ratio
    per: [bucket]
    aggregate: max
    window: 5m
    condition: "<= 0.255"
    on_breach: rollback
""", "stage-a.yaml").policies
    pages = iter(['strategy_bucket_usage_ratio{bucket="majors"} 0.10\n',
                  'strategy_bucket_usage_ratio{bucket="majors"} NaN\n',
                  'strategy_bucket_usage_ratio{bucket="majors"} +Inf\n'])

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=next(pages))

    url = await serve(app_answering(page, "/metrics"))
    evaluator = Evaluator([usage])
    scraper = MetricsScraper(f"{url}/metrics", clock=clock, sink=evaluator.feed)
    outcomes = []
    for _ in range(3):
        assert await scraper.read_once() is True
        outcomes.append(evaluator.evaluate(clock.time())[0].outcome)
        clock.advance(15)
    assert outcomes == [Outcome.PASS, Outcome.NODATA, Outcome.NODATA]
    assert evaluator.take_rejections() == {"nan": 1, "inf": 1}
