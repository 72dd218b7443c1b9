"""A policy reload that fails keeps the old set in force, whole; the next good reload replaces it."""

from __future__ import annotations

import shutil

from controller.clock import RealClock
from controller.config.daemon import DaemonConfig
from controller.daemon.service import Daemon, DaemonOptions
from controller.store.database import Database, resolve_url
from tests.support.checkout import POLICIES


async def test_a_file_that_breaks_the_parser_keeps_the_old_set(tmp_path):
    policies = tmp_path / "policies"
    shutil.copytree(POLICIES, policies)
    config = DaemonConfig.model_validate({
        "environments": {"testnet": {"kind": "testnet", "accounts": {"master": {"api_key": "env:K",
                                                                                "api_secret": "env:S"}}}},
        "policies_dir": str(policies)})
    db = Database(resolve_url(f"sqlite:///{tmp_path / 'canary.db'}"))
    try:
        daemon = Daemon(config, db, RealClock(), DaemonOptions(state_dir=tmp_path / "state", admin=False))
        before = daemon.policies.stage("stage-c.yaml")
        (policies / "stage-c.yaml").write_text("[" * 100_000)  # nested 100 000 deep: refused

        assert await daemon.reload() is False
        assert daemon.policies.stage("stage-c.yaml") is before

        (policies / "stage-c.yaml").write_text((POLICIES / "stage-c.yaml").read_text())
        assert await daemon.reload() is True
        assert daemon.policies.stage("stage-c.yaml") is not before
        assert [p.name for p in daemon.policies.stage("stage-c.yaml")] == [p.name for p in before]
    finally:
        await db.close()
