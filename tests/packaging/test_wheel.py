"""A pip install works like the checkout: the wheel, installed into a new virtual environment in a
folder outside the repository (tests/support/wheel.py), runs the demo, finds the shipped policies and
carries the units and monitoring files.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.wheel import succeeded

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

STAGE_FILES = ["stage-a.yaml", "stage-b.yaml", "stage-c-shadow.yaml", "stage-c.yaml", "stage-d.yaml"]
UNITS = ["canary-controller.service", "canary-harness.service", "canary-harness.timer", "canary-prune.service",
         "canary-prune.timer", "canary-review.service", "canary-review.timer", "canary-strategy@.service"]


def test_the_package_runs_from_the_venv_with_its_shipped_files_and_without_matplotlib(wheel_venv):
    package = Path(wheel_venv.python("import controller; print(controller.__file__)")).parent
    assert package.is_relative_to(wheel_venv.root)
    policies = Path(wheel_venv.python("from controller import shipped; print(shipped.policies_dir())"))
    assert policies == package / "_shipped" / "policies"
    assert sorted(p.name for p in policies.glob("*.yaml")) == STAGE_FILES
    assert sorted(p.name for p in (package / "rollout" / "pipelines").glob("*.yaml")) == ["default.yaml", "demo.yaml"]
    share = wheel_venv.root / "share" / "canary-controller"
    assert sorted(p.name for p in (share / "systemd").iterdir()) == UNITS
    assert {"alerts.yaml", "alerts.test.yaml", "prometheus.example.yaml"} <= {p.name for p in (share / "monitoring").iterdir()}
    assert (share / "monitoring" / "grafana").is_dir()
    assert wheel_venv.python("import importlib.util; print(importlib.util.find_spec('matplotlib'))") == "None"


def test_policy_check_validates_the_shipped_policies(wheel_venv):
    policies = wheel_venv.python("from controller import shipped; print(shipped.policies_dir())")
    checked = succeeded(wheel_venv.canaryctl("policy", "check", policies, "--json"))
    files = [json.loads(line) for line in checked.stdout.splitlines()]
    assert [(Path(f["file"]).name, f["stage"]) for f in files] == list(zip(STAGE_FILES, "ABCCD", strict=True))


def test_a_harness_run_finds_the_shipped_policies_and_the_report_lists_them(wheel_venv):
    db = f"sqlite:///{wheel_venv.home / 'harness.db'}"
    succeeded(wheel_venv.canaryctl("--db", db, "db", "upgrade"))
    ran = wheel_venv.canaryctl("--db", db, "harness", "run", "--duration", "10m", "--json")
    assert "policies folder does not exist" not in ran.stderr
    result = json.loads(succeeded(ran).stdout.splitlines()[-1])
    assert result["ok"] is True and result["stage"] == "B" and result["breaches"] == []
    shown = succeeded(wheel_venv.canaryctl("--db", db, "report", str(result["rollout"]), "--format", "json"))
    report = json.loads(shown.stdout)
    [policy_file] = report["evidence"]["policy_files"]
    assert policy_file["file"] == "stage-b.yaml" and policy_file["error"] is None
    assert Path(policy_file["path"]).is_relative_to(wheel_venv.root) and len(policy_file["sha256"]) == 64


def test_the_demo_promotes_the_healthy_release_and_rolls_back_the_defective_one(wheel_venv, demo_run):
    # The suite's one demo run is the installed wheel's (tests/support/wheel.py).
    workdir = demo_run.workdir
    assert workdir.is_relative_to(wheel_venv.home)
    assert demo_run.result.code == 0, (demo_run.result.err[-3000:], demo_run.result.out[-2000:])
    result = json.loads(demo_run.result.out.splitlines()[-1])
    healthy, defect = result["rollouts"]
    assert (healthy["release"], healthy["outcome"]) == ("1.1.0", "promoted")
    assert (defect["release"], defect["outcome"]) == ("1.2.0", "rolled_back")
    # Both of stage C's leverage policies see the wrong leverage; either may breach first.
    assert defect["policy"] in {"c-leverage-mismatch-zero", "c-exchange-leverage-matches-config"}
    assert result["audit_chain_ok"] is True

    # Without the plots extra the report of the rollback still renders and says what draws figures.
    db = f"sqlite:///{workdir / 'canary.db'}"
    archive = wheel_venv.home / "rollout-1.2.0.tar.gz"
    succeeded(wheel_venv.canaryctl("--db", db, "report", "1.2.0", "--archive", str(archive)))
    report = succeeded(wheel_venv.canaryctl("--db", db, "report", "1.2.0")).stdout
    assert "plots need matplotlib (pip install 'canary-controller[plots]')" in report
    succeeded(wheel_venv.canaryctl("report", "verify", str(archive)))
