"""/readyz tells whether an active rollout's verification runs: false, naming the rollout and why,
while it cannot start; true again once it does. Asked through the daemon's admin HTTP server.

The daemon runs in process on the embedded simulator (`daemon_on_sim`); the verification's failure
to start is planted in the runner (as if the exchange refused its observer), then taken away.
"""

from __future__ import annotations

import yaml

from controller.rollout.decide import Status
from controller.rollout.engine import RolloutRunner
from controller.rollout.info import create_rollout
from controller.rollout.pipeline import pipeline_from_document
from tests.daemon.harness import poll
from tests.daemon.inprocess import BOT, CANARY_PIPELINE, daemon_on_sim
from tests.support.admin import probe

RELEASES = {"1.0.0": BOT / "strategy.yaml", "1.1.0": BOT / "strategy-next.yaml"}


async def test_readyz_is_false_while_a_running_rollouts_verification_is_not_running(tmp_path, monkeypatch):
    async def refused(self, info, *, stage_index=None):
        raise RuntimeError("the exchange refuses the observer")

    monkeypatch.setattr(RolloutRunner, "_start_verification", refused)
    async with daemon_on_sim(tmp_path, RELEASES) as running:
        info = await create_rollout(running.db, running.clock, version="1.1.0",
                                    pipeline=pipeline_from_document(yaml.safe_load(CANARY_PIPELINE)), actor="tester")
        await running.until(info.id, Status.RUNNING)

        async def not_ready() -> dict | None:  # the daemon reads the rollouts' states once a turn
            status, body = await probe(running.admin_port, "/readyz")
            return body if status == 503 else None
        body = await poll(not_ready, timeout=10, alive=running.gone, what="/readyz to answer 503")
        assert body["ok"] is False
        assert (f"rollout {info.id}'s verification is not running: RuntimeError: the exchange refuses the observer"
                in body["reason"]), body

        monkeypatch.undo()  # the exchange answers again: the runner's next try starts the verification

        async def ready() -> dict | None:
            status, body = await probe(running.admin_port, "/readyz")
            return body if status == 200 else None
        body = await poll(ready, timeout=60, alive=running.gone, what="/readyz to answer 200 again")
        assert body["ok"] is True
