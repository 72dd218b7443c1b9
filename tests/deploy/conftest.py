"""The deployer tests' fixtures: a simulator for bots run as processes, and exchange access for
a stub that never calls it. The releases they place are in `tests.support.placements`."""

from __future__ import annotations

import pytest

from tests.support.simulator import sim_for_processes


@pytest.fixture
async def sim():
    async with sim_for_processes() as simulator:
        yield simulator


@pytest.fixture
def exchange() -> dict[str, str]:
    """Exchange access for bots that never call it (the stub)."""
    return {"rest_url": "http://127.0.0.1:9", "ws_url": "ws://127.0.0.1:9", "api_key": "stub-key",
            "api_secret": "stub-secret-0123456789"}
