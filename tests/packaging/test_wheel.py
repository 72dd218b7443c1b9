"""A pip install works like the checkout: the wheel, installed into a new virtual environment in a
folder outside the repository, runs the demo, finds the shipped policies and carries the units
and monitoring files.

Building needs hatchling and installing needs the dependencies, both from PyPI (pip's own cache,
or PIP_FIND_LINKS naming a folder of wheels, makes a second run quicker). The environment is a
clean one: no PYTHONPATH, no system site-packages, so nothing can come from the checkout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.checkout import REPO

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

STAGE_FILES = ["stage-a.yaml", "stage-b.yaml", "stage-c-shadow.yaml", "stage-c.yaml", "stage-d.yaml"]
UNITS = ["canary-controller.service", "canary-harness.service", "canary-harness.timer", "canary-prune.service",
         "canary-prune.timer", "canary-review.service", "canary-review.timer", "canary-strategy@.service"]


@dataclass(frozen=True)
class Venv:
    root: Path
    home: Path  # the working folder of every command: outside the checkout

    @property
    def bin(self) -> Path:
        return self.root / "bin"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV") and not k.startswith("CANARY_")}
        return {**env, "PATH": f"{self.bin}{os.pathsep}{env.get('PATH', '')}", "XDG_STATE_HOME": str(self.home),
                "CANARY_ACTOR": "tester"}

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run(args, cwd=self.home, env=self.env(), capture_output=True, text=True, timeout=timeout)

    def canaryctl(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return self.run(str(self.bin / "canaryctl"), *args, timeout=timeout)

    def python(self, code: str) -> str:
        done = self.run(str(self.bin / "python"), "-c", code)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()


def _ok(done: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert done.returncode == 0, (done.args, done.returncode, done.stderr[-3000:], done.stdout[-2000:])
    return done


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Venv:
    """The wheel built from the checkout, installed with its dependencies into a new venv."""
    wheels = tmp_path_factory.mktemp("wheel")
    _ok(subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(wheels), str(REPO)],
                       capture_output=True, text=True, timeout=600))
    [wheel] = wheels.glob("canary_controller-*.whl")
    root = tmp_path_factory.mktemp("venv")
    home = tmp_path_factory.mktemp("home")
    assert not home.is_relative_to(REPO) and not root.is_relative_to(REPO)
    made = Venv(root, home)
    _ok(subprocess.run([sys.executable, "-m", "venv", str(root)], capture_output=True, text=True, timeout=120))
    _ok(made.run(str(made.bin / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                 str(wheel), timeout=900))
    return made


def test_the_package_runs_from_the_venv_with_its_shipped_files_and_without_matplotlib(venv):
    package = Path(venv.python("import controller; print(controller.__file__)")).parent
    assert package.is_relative_to(venv.root)
    policies = Path(venv.python("from controller import shipped; print(shipped.policies_dir())"))
    assert policies == package / "_shipped" / "policies"
    assert sorted(p.name for p in policies.glob("*.yaml")) == STAGE_FILES
    assert sorted(p.name for p in (package / "rollout" / "pipelines").glob("*.yaml")) == ["default.yaml", "demo.yaml"]
    share = venv.root / "share" / "canary-controller"
    assert sorted(p.name for p in (share / "systemd").iterdir()) == UNITS
    assert {"alerts.yaml", "alerts.test.yaml", "prometheus.example.yaml"} <= {p.name for p in (share / "monitoring").iterdir()}
    assert (share / "monitoring" / "grafana").is_dir()
    assert venv.python("import importlib.util; print(importlib.util.find_spec('matplotlib'))") == "None"


def test_policy_check_validates_the_shipped_policies(venv):
    policies = venv.python("from controller import shipped; print(shipped.policies_dir())")
    checked = _ok(venv.canaryctl("policy", "check", policies, "--json"))
    files = [json.loads(line) for line in checked.stdout.splitlines()]
    assert [(Path(f["file"]).name, f["stage"]) for f in files] == list(zip(STAGE_FILES, "ABCCD", strict=True))


def test_a_harness_run_finds_the_shipped_policies_and_the_report_lists_them(venv):
    db = f"sqlite:///{venv.home / 'harness.db'}"
    _ok(venv.canaryctl("--db", db, "db", "upgrade"))
    ran = venv.canaryctl("--db", db, "harness", "run", "--duration", "10m", "--json")
    assert "policies folder does not exist" not in ran.stderr
    result = json.loads(_ok(ran).stdout.splitlines()[-1])
    assert result["ok"] is True and result["stage"] == "B" and result["breaches"] == []
    report = json.loads(_ok(venv.canaryctl("--db", db, "report", str(result["rollout"]), "--format", "json")).stdout)
    [policy_file] = report["evidence"]["policy_files"]
    assert policy_file["file"] == "stage-b.yaml" and policy_file["error"] is None
    assert Path(policy_file["path"]).is_relative_to(venv.root) and len(policy_file["sha256"]) == 64


def test_the_demo_promotes_the_healthy_release_and_rolls_back_the_defective_one(venv):
    workdir = venv.home / "demo"
    demo = _ok(venv.canaryctl("demo", "--json", "--workdir", str(workdir), timeout=600))
    result = json.loads(demo.stdout.splitlines()[-1])
    healthy, defect = result["rollouts"]
    assert (healthy["release"], healthy["outcome"]) == ("1.1.0", "promoted")
    assert (defect["release"], defect["outcome"]) == ("1.2.0", "rolled_back")
    # Both of stage C's leverage policies see the wrong leverage; either may breach first.
    assert defect["policy"] in {"c-leverage-mismatch-zero", "c-exchange-leverage-matches-config"}
    assert result["audit_chain_ok"] is True

    # Without the plots extra the report of the rollback still renders and says what draws figures.
    db = f"sqlite:///{workdir / 'canary.db'}"
    archive = venv.home / "rollout-1.2.0.tar.gz"
    _ok(venv.canaryctl("--db", db, "report", "1.2.0", "--archive", str(archive)))
    report = _ok(venv.canaryctl("--db", db, "report", "1.2.0")).stdout
    assert "plots need matplotlib (pip install 'canary-controller[plots]')" in report
    _ok(venv.canaryctl("report", "verify", str(archive)))
