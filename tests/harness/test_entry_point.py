"""The release's in-process entry point, named MODULE:CALLABLE and resolved at run time, and the
harness's count of the requests its bot, and the runner's scrapes of it, have in flight."""

from __future__ import annotations

import pytest
from aiohttp import ClientConnectionError, ClientSession, web

from controller.clock import SimulatedClock
from controller.errors import InputError
from controller.harness.release import REFERENCE_ENTRY_POINT, load_entry_point
from controller.harness.stepping import InFlight
from controller.observe.metrics import MetricsScraper


def test_the_reference_bots_entry_point_resolves_to_a_callable():
    assert callable(load_entry_point(REFERENCE_ENTRY_POINT))


@pytest.mark.parametrize(("spec", "message"), [
    ("reference_bot.embedded", "expected MODULE:CALLABLE, e.g. reference_bot.embedded:EmbeddedBot"),
    ("no_such_release.embedded:Bot", "cannot import no_such_release.embedded"),
    ("reference_bot.embedded:NoSuchBot", "reference_bot.embedded has no NoSuchBot"),
    ("reference_bot.embedded:START_TIMEOUT", "START_TIMEOUT is not callable"),
])
def test_an_entry_point_that_cannot_be_used_is_refused_with_exit_status_2(spec, message):
    with pytest.raises(InputError) as refused:
        load_entry_point(spec)
    assert message in str(refused.value) and refused.value.exit_code == 2


async def test_a_sessions_requests_count_in_flight_from_their_start_to_their_answer():
    in_flight = InFlight()
    seen: list[int] = []

    async def answer(request: web.Request) -> web.Response:
        seen.append(in_flight.count)  # while the server answers, the request is out
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    async with ClientSession(trace_configs=[in_flight.trace_config()]) as session:
        try:
            async with session.get(f"http://127.0.0.1:{port}/") as response:
                assert await response.text() == "ok"
        finally:
            await runner.cleanup()
        with pytest.raises(ClientConnectionError):  # a request that fails ends its count too
            await session.get(f"http://127.0.0.1:{port}/")
    assert seen == [1] and in_flight.count == 0 and in_flight.started == 2


async def test_the_runners_scrapes_of_a_bots_metrics_count_in_flight():
    # Uncounted, the stepped clock jumped while a scrape was out (up to 30 s of it), and a bot whose
    # requests did not happen to hold the clock meanwhile (one streaming its prices) had its
    # margin fractions judged 90 s old though it recomputed them every 50 s.
    in_flight = InFlight()
    seen: list[int] = []

    async def page(request: web.Request) -> web.Response:
        seen.append(in_flight.count)
        return web.Response(text="strategy_iterations_total 3\n", content_type="text/plain")

    app = web.Application()
    app.router.add_get("/metrics", page)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    received: list = []
    scraper = MetricsScraper(f"http://127.0.0.1:{runner.addresses[0][1]}/metrics", clock=SimulatedClock(0.0),
                             sink=received.append, trace_configs=[in_flight.trace_config()])
    try:
        async with scraper.holding():
            assert await scraper.read_once()
    finally:
        await runner.cleanup()
    assert seen == [1] and in_flight.count == 0 and received
