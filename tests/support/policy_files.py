"""Policy folders the end-to-end stories run with: copies of the shipped ones, changed where a story
needs a stage that neither passes nor rolls back on its own."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from tests.support.checkout import POLICIES


def holding_policies(folder: Path) -> Path:
    """A copy of the shipped policies whose stage C has one policy, holding on failure and on nodata."""
    shutil.copytree(POLICIES, folder)
    stage_c = folder / "stage-c.yaml"
    document = yaml.safe_load(stage_c.read_text())
    document["policies"] = [{
        "name": "c-bot-process-up", "checklist": "C: Ensure alerting is active and quiet", "source": "process",
        "metric": "up", "aggregate": "last", "window": "1m", "condition": "== 1", "on_breach": "hold",
        "on_nodata": {"action": "hold"}}]
    stage_c.write_text(yaml.safe_dump(document, sort_keys=False))
    return folder
