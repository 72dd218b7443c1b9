"""`canaryctl demo --json`, the product's main job on the embedded default, as an operator runs it
after a pip install: the suite's one demo run, of the installed wheel at debug log level
(tests/support/wheel.py), shared with tests/e2e/test_demo_secrets.py and tests/packaging/test_wheel.py."""

from __future__ import annotations

import json

import pytest


@pytest.mark.slow  # it builds and installs the wheel
def test_the_demo_shadows_then_promotes_the_healthy_release_and_rolls_back_the_wrong_leverage(demo_run):
    result = demo_run.result
    assert result.code == 0, (result.out[-3000:], result.err[-3000:])
    summary = json.loads(result.out.strip().splitlines()[-1])
    healthy, defect = summary["rollouts"]
    assert healthy == {"release": "1.1.0", "outcome": "promoted", "policy": None, "detect_ms": None,
                       "rollback_ms": None, "safe_ms": None}
    assert defect["release"] == "1.2.0" and defect["outcome"] == "rolled_back"
    assert defect["policy"] in {"c-leverage-mismatch-zero", "c-exchange-leverage-matches-config"}
    assert 0 <= defect["detect_ms"] < 5000 and 0 < defect["rollback_ms"] < 30000
    assert 0 < defect["safe_ms"] < defect["rollback_ms"]  # safe once leverage is back; the restart comes after
    assert summary["audit_chain_ok"] is True
    assert summary["db"] == f"sqlite:///{demo_run.workdir / 'canary.db'}"
    assert "rollout 2: running -> rolling_back" in result.out
    # Each rollout runs its shadow stage before the live canary stage.
    shadow, live = result.out.index("stage C-shadow runs"), result.out.index("stage C runs")
    assert shadow < live
    assert "Traceback" not in result.err
