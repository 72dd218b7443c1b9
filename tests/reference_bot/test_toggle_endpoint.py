"""The reference bot's feature toggle endpoint: ``POST /toggle/NAME`` with ``{"enabled": bool}`` on
its metrics address, exported as ``strategy_feature_enabled{name}``; any other body is refused."""

from __future__ import annotations

import aiohttp

from reference_bot.metrics import BotMetrics, MetricsServer


async def test_a_toggle_posted_on_and_off_is_exported_and_a_bad_body_is_refused():
    metrics = BotMetrics(symbols=["BTCUSDT"], buckets=["core"])
    server = MetricsServer(metrics)
    port = await server.start()
    url = f"http://127.0.0.1:{port}/toggle/new_sizing"
    try:
        async with aiohttp.ClientSession() as session:
            async with session.post(url, json={"enabled": True}) as response:
                assert (response.status, await response.json()) == (200, {"name": "new_sizing", "enabled": True})
            assert metrics.registry.get_sample_value("strategy_feature_enabled", {"name": "new_sizing"}) == 1.0
            async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
                assert 'strategy_feature_enabled{name="new_sizing"} 1.0' in await response.text()

            async with session.post(url, json={"enabled": False}) as response:
                assert response.status == 200
            assert metrics.registry.get_sample_value("strategy_feature_enabled", {"name": "new_sizing"}) == 0.0

            for body in ({"enabled": "yes"}, {}, [True]):
                async with session.post(url, json=body) as response:
                    assert response.status == 400, body
                    assert "enabled" in (await response.json())["error"]
            async with session.post(url, data=b"not json") as response:
                assert response.status == 400
            assert metrics.registry.get_sample_value("strategy_feature_enabled", {"name": "new_sizing"}) == 0.0
    finally:
        await server.stop()
