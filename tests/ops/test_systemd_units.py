"""The units in systemd/: each passes the real ``systemd-analyze verify``, and each agrees with
the code it starts (the daemon's shutdown bound, the deployer's folders, canaryctl's commands)."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from controller.cli.app import COMMANDS, cli
from controller.daemon.service import DaemonOptions
from controller.deploy.systemd import DEFAULT_ENV_DIR
from tests.support.checkout import SYSTEMD_DIR
from tests.support.tools import require_tool

UNITS = sorted(path.name for path in SYSTEMD_DIR.iterdir() if path.suffix in (".service", ".timer"))
TEMPLATE_INSTANCE = "sim-canary"  # what the systemd deployer starts: canary-strategy@<environment>-<account>


def settings(name: str) -> dict[str, list[str]]:
    """The unit's ``Name=value`` lines (every section), values in order; comments skipped."""
    found: dict[str, list[str]] = {}
    for line in (SYSTEMD_DIR / name).read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith(("#", ";")):
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def seconds(value: str) -> float:
    """A systemd time span as written in these units: ``20``, ``30s``, ``5min``, ``2h``."""
    number, unit = re.fullmatch(r"(\d+)\s*(s|min|h)?", value).groups()
    return int(number) * {"s": 1, None: 1, "min": 60, "h": 3600}[unit]


@pytest.fixture(scope="module")
def unit_dir(tmp_path_factory) -> Path:
    """The units as systemd would load them, side by side (the timer beside its service); the
    template as one of its instances."""
    folder = tmp_path_factory.mktemp("units")
    for name in UNITS:
        shutil.copy(SYSTEMD_DIR / name, folder / name.replace("@.", f"@{TEMPLATE_INSTANCE}."))
    return folder


def test_the_folder_holds_the_daemon_the_strategy_template_and_the_nightly_harness():
    assert set(UNITS) == {"canary-controller.service", "canary-strategy@.service", "canary-harness.service",
                          "canary-harness.timer", "canary-prune.service", "canary-prune.timer",
                          "canary-review.service", "canary-review.timer"}


@pytest.mark.parametrize("name", UNITS)
def test_the_unit_passes_systemd_analyze_verify(name, unit_dir):
    analyze = require_tool("systemd-analyze", "systemd")
    unit = unit_dir / name.replace("@.", f"@{TEMPLATE_INSTANCE}.")
    # verify also checks that each Exec*= binary exists: the units start canaryctl and the bot
    # through /usr/bin/env, so they verify on a machine where canary-controller is not installed.
    result = subprocess.run([analyze, "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_the_controller_unit_keeps_its_hardening(unit_dir):
    analyze = require_tool("systemd-analyze", "systemd")
    result = subprocess.run([analyze, "security", "--offline=yes", "--no-pager", str(unit_dir / "canary-controller.service")],
                            capture_output=True, text=True, timeout=60)
    overall = re.search(r"Overall exposure level for \S+: ([\d.]+) (\w+)", result.stdout)
    assert overall, result.stdout + result.stderr
    print(overall.group(0))  # shown with pytest -s or -rP
    # 1.7 ("OK") with systemd 252; well above 2 means a hardening option went missing.
    assert float(overall.group(1)) <= 2.5, result.stdout


def test_the_controller_is_a_watched_notify_service_reloaded_by_sighup():
    unit = settings("canary-controller.service")
    assert unit["Type"] == ["notify"]
    assert seconds(unit["WatchdogSec"][0]) > 0  # the daemon reads WATCHDOG_USEC and pings at half of it
    assert unit["Restart"] == ["on-failure"]
    assert unit["ExecReload"] == ["/bin/kill -HUP $MAINPID"]


def test_stopping_the_controller_signals_the_daemon_only_so_its_bots_keep_trading():
    # The process deployer's bots live in the controller's cgroup; any other KillMode kills them.
    assert settings("canary-controller.service")["KillMode"] == ["process"]


def test_systemd_waits_for_the_daemons_bounded_shutdown_before_killing_it():
    drain = DaemonOptions(state_dir=Path("/unused")).stop_timeout
    assert seconds(settings("canary-controller.service")["TimeoutStopSec"][0]) >= drain + 5


def test_the_state_directory_is_where_the_systemd_deployer_writes_its_instances():
    unit = settings("canary-controller.service")
    assert Path("/var/lib", unit["StateDirectory"][0]) == DEFAULT_ENV_DIR.parent
    assert settings("canary-strategy@.service")["User"] == unit["User"]  # the bot reads the 0600 files we write


def test_the_bot_cannot_read_the_controllers_credentials():
    hidden = settings("canary-strategy@.service")["InaccessiblePaths"][0].split()
    assert "-/run/credentials/canary-controller.service" in hidden


@pytest.mark.parametrize("name", ["canary-controller.service", "canary-harness.service", "canary-prune.service",
                                  "canary-review.service"])
def test_the_unit_runs_a_command_canaryctl_knows(name):
    argv = shlex.split(settings(name)["ExecStart"][0])
    assert argv[:2] == ["/usr/bin/env", "canaryctl"]
    assert argv[2:4] == ["--config", "/etc/canary-controller/controller.yaml"]
    command = argv[4]
    if command not in COMMANDS:
        pytest.skip(f"canaryctl has no `{command}` command yet: {name} cannot be checked against it")
    # --help after the arguments: click refuses an unknown option or command before it shows help.
    result = CliRunner().invoke(cli, [*argv[2:], "--help"])
    assert result.exit_code == 0, result.output


def test_the_harness_runs_nightly_for_48_simulated_hours():
    assert shlex.split(settings("canary-harness.service")["ExecStart"][0])[4:] == [
        "harness", "run", "--duration", "48h", "--json"]
    timer = settings("canary-harness.timer")
    assert timer["OnCalendar"] == ["*-*-* 02:00:00"]
    assert timer["Persistent"] == ["true"]


def test_the_prune_runs_nightly_keeping_90_days_in_the_daemons_state_folder():
    prune = settings("canary-prune.service")
    assert shlex.split(prune["ExecStart"][0])[4:] == ["db", "prune", "--older-than", "90d", "--json"]
    # The daemon's folder: where its SQLite database is, and where the archives go (pruned/).
    assert prune["StateDirectory"] == settings("canary-controller.service")["StateDirectory"]
    assert prune["User"] == settings("canary-controller.service")["User"]
    timer = settings("canary-prune.timer")
    assert timer["OnCalendar"] == ["*-*-* 03:30:00"] and timer["Persistent"] == ["true"]


def test_the_review_runs_weekly_on_monday_morning_into_the_daemons_state_folder():
    review = settings("canary-review.service")
    argv = shlex.split(review["ExecStart"][0])
    assert argv[4:] == ["review", "--since", "7d", "--archive", "%S/canary-controller/reviews", "--json"]
    # The daemon's folder (its SQLite database) and reviews/ in it, which systemd creates.
    assert review["StateDirectory"] == ["canary-controller canary-controller/reviews"]
    assert review["StateDirectory"][0].split()[0] == settings("canary-controller.service")["StateDirectory"][0]
    assert review["User"] == settings("canary-controller.service")["User"]
    timer = settings("canary-review.timer")
    assert timer["OnCalendar"] == ["Mon *-*-* 06:00:00"] and timer["Persistent"] == ["true"]

