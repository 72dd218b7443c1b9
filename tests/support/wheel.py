"""The package as pip installs it: the wheel built from the checkout, installed with its dependencies
into a new virtual environment in a folder outside the repository, and ``canaryctl demo`` run there.

Building needs hatchling and installing needs the dependencies, both from PyPI (pip's own cache,
or PIP_FIND_LINKS naming a folder of wheels, makes a second run quicker). The environment is a
clean one: no PYTHONPATH, no system site-packages, so nothing can come from the checkout.

One demo run, from the installed wheel at debug log level, serves every test that judges a demo:
its outcome (tests/e2e/test_demo.py), the secrets it must not write (tests/e2e/test_demo_secrets.py)
and the wheel's own (tests/packaging/test_wheel.py). A demo takes a minute and a half of wall time.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.support.canaryctl import Result
from tests.support.checkout import REPO


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


def succeeded(done: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert done.returncode == 0, (done.args, done.returncode, done.stderr[-3000:], done.stdout[-2000:])
    return done


def install_wheel(wheels: Path, root: Path, home: Path) -> Venv:
    """The wheel built from the checkout into ``wheels``, installed with its dependencies into a new
    venv at ``root``; its commands run in ``home``."""
    succeeded(subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(wheels),
                              str(REPO)], capture_output=True, text=True, timeout=600))
    [wheel] = wheels.glob("canary_controller-*.whl")
    assert not home.is_relative_to(REPO) and not root.is_relative_to(REPO)
    made = Venv(root, home)
    succeeded(subprocess.run([sys.executable, "-m", "venv", str(root)], capture_output=True, text=True, timeout=120))
    succeeded(made.run(str(made.bin / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                       str(wheel), timeout=900))
    return made


@dataclass(frozen=True)
class DemoRun:
    result: Result
    workdir: Path
    """The ``--workdir`` of the run: its database, the bots' files and the daemon's state."""


def run_demo(venv: Venv, workdir: Path) -> DemoRun:
    """``canaryctl demo --json`` of the installed wheel, at debug log level (whose lines must carry no
    secret). A minute and a half of wall time on an idle machine; the timeout leaves room for a loaded one."""
    done = venv.canaryctl("demo", "--json", "--log-level", "debug", "--workdir", str(workdir), timeout=600)
    return DemoRun(Result(done.returncode, done.stdout, done.stderr), workdir)
