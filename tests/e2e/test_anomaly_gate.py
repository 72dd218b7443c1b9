"""The daemon keeps the last stage from being promoted while an anomaly an operator logged is open:
a promote is refused naming it, a forced promote with a reason goes through and is audited with it.

The daemon runs in this process on the simulator (clock 10x); canaryctl runs as real processes
against the same SQLite file.
"""

from __future__ import annotations

import re

import pytest

from controller.rollout.decide import Status
from controller.rollout.info import get_rollout
from controller.store import audit
from tests.daemon.inprocess import BOT, CANARY_PIPELINE, daemon_on_sim


@pytest.fixture
async def running(tmp_path):
    (tmp_path / "pipeline.yaml").write_text(CANARY_PIPELINE)  # stage C alone: the last stage
    async with daemon_on_sim(tmp_path, {"1.0.0": BOT / "strategy.yaml", "1.1.0": BOT / "strategy-next.yaml"},
                             speed=10.0) as site:
        yield site, str(tmp_path / "pipeline.yaml")


async def test_an_open_anomaly_shuts_the_last_gate_until_forced(running):
    site, pipeline = running
    assert (await site.ctl("rollout", "start", "1.1.0", "--pipeline", pipeline)).code == 0
    rollout = (await get_rollout(site.db, "1.1.0")).id
    await site.until(rollout, Status.RUNNING)

    noted = await site.ctl("note", "1.1.0", "--anomaly", "fills on ETHUSDT twice the expected size")
    assert noted.code == 0, noted
    anomaly = int(re.search(r"anomaly (\d+) logged", noted.out).group(1))
    assert (await site.ctl("signoff", "1.1.0", "C", "--by", "alice")).code == 0

    refused = await site.ctl("promote", "1.1.0")
    assert refused.code == 1, refused
    assert f"open anomaly {anomaly} (tester: fills on ETHUSDT twice the expected size)" in refused.out, refused.out

    forced = await site.ctl("promote", "1.1.0", "--force", "--reason", "sizing understood, INC-12")
    assert forced.code == 0, forced
    await site.until(rollout, Status.PROMOTED)
    events = [e async for e in audit.query(site.db, audit.AuditFilter(kind="rollout.forced_promote"))]
    assert [e.payload["reason"] for e in events] == ["sizing understood, INC-12"]
    assert any(f"anomaly {anomaly}" in blocker for blocker in events[0].payload["blockers"])
