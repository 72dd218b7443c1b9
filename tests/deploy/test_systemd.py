"""SystemdDeployer against a fake ``systemctl`` (and ``journalctl``) first on PATH: the fake
records every call and keeps the units' state in a file; the bot's /metrics is a real server.
The shipped template unit is checked by the real ``systemd-analyze verify`` in tests/ops."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from aiohttp import web

from controller.deploy import CallTimeout, DeployError, SystemdDeployer
from controller.deploy.systemd import DEFAULT_ENV_DIR, parse_env_file, render_env_file
from controller.config.manifest import ReleaseManifest
from tests.support.checkout import REPO
from tests.support.placements import placement, reference_manifest

INSTANCE = "sim-canary"
UNIT = f"canary-strategy@{INSTANCE}.service"
SHOW = ["show", "-p", "ActiveState,SubState,MainPID", UNIT]
TEMPLATE = REPO / "systemd" / "canary-strategy@.service"

FAKE_SYSTEMCTL = """\
import json, os, sys, time
from pathlib import Path

root = Path(os.environ["FAKE_SYSTEMD"])
args = sys.argv[1:]
with open(root / "calls.jsonl", "a") as calls:
    calls.write(json.dumps([Path(sys.argv[0]).name, *args]) + "\\n")
state_file = root / "state.json"
state = json.loads(state_file.read_text())
units = state["units"]
if args[0] == "--user":
    args = args[1:]
verb, unit = args[0], args[-1]
if verb in state.get("hangs", []):
    time.sleep(30)
current = units.get(unit, {"ActiveState": "inactive", "SubState": "dead", "MainPID": "0"})
if verb == "show":
    for key in args[2].split(","):
        print(f"{key}={current.get(key, '')}")
elif verb == "start":
    if state.get("start_refused"):
        print(state["start_refused"], file=sys.stderr)
        sys.exit(1)
    active = state.get("started_state", "active")
    units[unit] = {"ActiveState": active, "SubState": "running" if active == "active" else active, "MainPID": "4242"}
elif verb == "stop":
    if current.get("ignores_sigterm"):
        time.sleep(30)
    units[unit] = {"ActiveState": "inactive", "SubState": "dead", "MainPID": "0"}
elif verb == "kill":
    current.pop("ignores_sigterm", None)
    units[unit] = current
state_file.write_text(json.dumps(state))
"""

FAKE_JOURNALCTL = """\
import json, os, sys
from pathlib import Path

root = Path(os.environ["FAKE_SYSTEMD"])
with open(root / "calls.jsonl", "a") as calls:
    calls.write(json.dumps([Path(sys.argv[0]).name, *sys.argv[1:]]) + "\\n")
print("\\n".join(json.loads((root / "state.json").read_text()).get("journal", [])))
"""


class FakeSystemd:
    """The fake's state and what it was asked."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.state_file = root / "state.json"
        self.calls_file = root / "calls.jsonl"
        self.state_file.write_text(json.dumps({"units": {}}))

    def update(self, **changes) -> None:
        self.state_file.write_text(json.dumps({**json.loads(self.state_file.read_text()), **changes}))

    def set_unit(self, **fields) -> None:
        state = json.loads(self.state_file.read_text())
        state["units"][UNIT] = {**state["units"].get(UNIT, {}), **fields}
        self.state_file.write_text(json.dumps(state))

    def calls(self) -> list[list[str]]:
        """The calls since the last time they were read."""
        if not self.calls_file.exists():
            return []
        lines = self.calls_file.read_text().splitlines()
        self.calls_file.unlink()
        return [json.loads(line) for line in lines]


@pytest.fixture
def fake(tmp_path, monkeypatch) -> FakeSystemd:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, source in (("systemctl", FAKE_SYSTEMCTL), ("journalctl", FAKE_JOURNALCTL)):
        script = bin_dir / name
        script.write_text(f"#!{sys.executable} -S\n{source}")
        script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SYSTEMD", str(tmp_path))
    return FakeSystemd(tmp_path)


@pytest.fixture
async def metrics_port():
    """A real /metrics for the bot systemd would have started."""
    app = web.Application()
    async def metrics(_request: web.Request) -> web.Response:
        return web.Response(text="stub_up 1\n")

    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield runner.addresses[0][1]
    await runner.cleanup()


@pytest.fixture
def env_dir(tmp_path) -> Path:
    return tmp_path / "instances"


@pytest.fixture
def deployer(fake, env_dir, clock) -> SystemdDeployer:
    return SystemdDeployer(clock, env_dir=env_dir, python="/opt/canary/bin/python")


def reference_on(port: int) -> ReleaseManifest:
    """The reference bot's manifest with its metrics on ``port`` (where the test's server answers)."""
    manifest = reference_manifest()
    return manifest.model_copy(update={"metrics": manifest.metrics.model_copy(update={"port": port})})


def placed(exchange, port: int, release: str = "1.0.0"):
    return placement(exchange, release=release, manifest=reference_on(port))


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_start_writes_the_units_files_owner_only_and_starts_it_once_its_metrics_answer(
        deployer, fake, env_dir, exchange, metrics_port, clock):
    chosen = placed(exchange, metrics_port)
    running = await deployer.start(chosen)
    assert fake.calls() == [["systemctl", *SHOW], ["systemctl", "start", UNIT], ["systemctl", *SHOW]]
    config, secret = env_dir / f"{INSTANCE}.config.json", env_dir / f"{INSTANCE}.exchange.json"
    argv = ["/opt/canary/bin/python", "-m", "reference_bot", "--config", str(config),
            "--metrics-port", str(metrics_port), "--exchange", str(secret)]
    assert parse_env_file((env_dir / f"{INSTANCE}.env").read_text()) == {
        "CANARY_COMMAND": shlex.join(argv), "CANARY_RELEASE": "1.0.0", "CANARY_CONFIG_SHA256": chosen.config_sha256,
        "CANARY_CONFIG": str(config), "CANARY_EXCHANGE_FILE": str(secret), "CANARY_METRICS_PORT": str(metrics_port),
        "CANARY_METRICS_URL": f"http://127.0.0.1:{metrics_port}/metrics", "CANARY_STARTED_AT": repr(clock.time()),
        "CANARY_SIM_SPEED": "5.0"}
    assert config.read_text() == chosen.config_text and json.loads(secret.read_text()) == exchange
    assert [mode(p) for p in (env_dir, env_dir / f"{INSTANCE}.env", config, secret)] == [0o700, 0o600, 0o600, 0o600]
    assert exchange["api_secret"] not in (env_dir / f"{INSTANCE}.env").read_text()
    assert (running.pid, running.journal_unit, running.log_file, running.release) == (4242, UNIT, None, "1.0.0")
    assert await deployer.status(INSTANCE) == running


async def test_the_units_env_dash_S_gets_back_the_exact_argv(deployer, env_dir, exchange, metrics_port):
    odd = ["it's", 'a "quoted" $HOME', "#not a comment", "%i", "ünïcode", ""]
    manifest = reference_on(metrics_port).model_copy(update={
        "command": ["{python}", "-c", "import json, sys; print(json.dumps(sys.argv[1:]))", *odd]})
    await deployer.start(placement(exchange, manifest=manifest))
    command = parse_env_file((env_dir / f"{INSTANCE}.env").read_text())["CANARY_COMMAND"]
    command = command.replace(shlex.quote("/opt/canary/bin/python"), shlex.quote(sys.executable), 1)
    out = subprocess.run(["/usr/bin/env", "-S", command], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == odd


async def test_status_is_none_when_the_unit_is_not_active(deployer, fake):
    assert await deployer.status(INSTANCE) is None
    fake.set_unit(ActiveState="failed", SubState="failed", MainPID="0")
    assert await deployer.status(INSTANCE) is None


async def test_starting_the_running_release_again_only_asks_systemd_what_runs(deployer, fake, exchange, metrics_port):
    running = await deployer.start(placed(exchange, metrics_port))
    fake.calls()
    assert await deployer.start(placed(exchange, metrics_port)) == running
    assert fake.calls() == [["systemctl", *SHOW]]


async def test_another_release_on_a_busy_instance_is_refused_naming_the_unit(deployer, fake, exchange, metrics_port):
    await deployer.start(placed(exchange, metrics_port))
    fake.calls()
    with pytest.raises(DeployError, match=f"{UNIT} runs release 1.0.0 .*stop it before starting 1.1.0"):
        await deployer.start(placed(exchange, metrics_port, release="1.1.0"))
    assert fake.calls() == [["systemctl", *SHOW]]


async def test_stop_stops_the_unit_and_removes_its_credentials_and_a_second_stop_finds_nothing(
        deployer, fake, env_dir, exchange, metrics_port):
    running = await deployer.start(placed(exchange, metrics_port))
    fake.calls()
    assert await deployer.stop(INSTANCE) == running
    assert fake.calls() == [["systemctl", *SHOW], ["systemctl", "stop", UNIT]]
    assert sorted(p.name for p in env_dir.iterdir()) == [f"{INSTANCE}.config.json"]
    assert await deployer.stop(INSTANCE) is None
    assert fake.calls() == [["systemctl", *SHOW]]


async def test_a_unit_still_stopping_after_the_grace_is_killed(deployer, fake, exchange, metrics_port):
    running = await deployer.start(placed(exchange, metrics_port))
    fake.set_unit(ignores_sigterm=True)
    fake.calls()
    began = time.monotonic()
    assert await deployer.stop(INSTANCE, grace=0.5) == running
    assert 0.5 <= time.monotonic() - began < 5
    assert fake.calls() == [["systemctl", *SHOW], ["systemctl", "stop", UNIT],
                            ["systemctl", "kill", "--signal=SIGKILL", UNIT], ["systemctl", "stop", UNIT]]
    assert await deployer.status(INSTANCE) is None


async def test_a_stop_without_grace_kills_the_unit_at_once(deployer, fake, exchange, metrics_port):
    running = await deployer.start(placed(exchange, metrics_port))
    fake.calls()
    assert await deployer.stop(INSTANCE, grace=0) == running
    assert fake.calls() == [["systemctl", *SHOW], ["systemctl", "kill", "--signal=SIGKILL", UNIT],
                            ["systemctl", "stop", UNIT]]
    assert await deployer.status(INSTANCE) is None


async def test_a_systemctl_call_that_hangs_is_killed_at_its_bound_with_an_error_naming_it(
        fake, env_dir, clock, exchange, metrics_port):
    """A rollback's stop must not wait on a hung systemd: every call has a deadline."""
    deployer = SystemdDeployer(clock, env_dir=env_dir, call_timeout=0.5)
    await deployer.start(placed(exchange, metrics_port))
    fake.set_unit(ignores_sigterm=True)
    fake.update(hangs=["kill"])
    began = time.monotonic()
    with pytest.raises(DeployError, match=f"systemctl kill --signal=SIGKILL {UNIT} did not end within 0.5 s"):
        await asyncio.wait_for(deployer.stop(INSTANCE, grace=0.5), 10)
    assert time.monotonic() - began < 5
    fake.update(hangs=["show"])
    with pytest.raises(CallTimeout, match=f"systemctl show -p ActiveState,SubState,MainPID {UNIT} did not end"):
        await asyncio.wait_for(deployer.status(INSTANCE), 10)


async def test_a_bot_that_ends_during_start_up_fails_the_start_with_its_journal_secrets_hidden(
        deployer, fake, env_dir, exchange):
    fake.update(started_state="failed", journal=[
        "Traceback (most recent call last):", f"ValueError: bad key {exchange['api_secret']}",
        f"{UNIT}: Main process exited, code=exited, status=1/FAILURE"])
    with pytest.raises(DeployError) as refused:
        await deployer.start(placed(exchange, 0))  # a free port: nothing answers there
    message = str(refused.value)
    assert message.startswith(f"{UNIT}: release 1.0.0 ended during start-up (failed/failed); its last output:\n")
    assert "ValueError: bad key ***" in message and exchange["api_secret"] not in message
    calls = fake.calls()
    assert ["journalctl", "--unit", UNIT, "-n", "20", "-o", "cat", "--no-pager", "-q"] in calls
    assert calls[-1] == ["systemctl", "stop", UNIT]
    assert not (env_dir / f"{INSTANCE}.exchange.json").exists()


async def test_a_start_systemd_refuses_is_a_deploy_error_quoting_systemctl(deployer, fake, exchange, metrics_port):
    fake.update(start_refused=f"Failed to start {UNIT}: Unit {UNIT} not found.")
    with pytest.raises(DeployError, match=f"systemctl start {UNIT} failed with status 1: "
                                          f"Failed to start {UNIT}: Unit {UNIT} not found."):
        await deployer.start(placed(exchange, metrics_port))


async def test_a_user_manager_is_asked_with_dash_dash_user(fake, env_dir, clock, exchange, metrics_port):
    deployer = SystemdDeployer(clock, env_dir=env_dir, user=True)
    await deployer.start(placed(exchange, metrics_port))
    await deployer.stop(INSTANCE)
    assert all(call[1] == "--user" for call in fake.calls())


async def test_a_release_may_not_set_the_deployers_own_variables(deployer, fake, exchange, metrics_port):
    manifest = reference_on(metrics_port).model_copy(update={"env": {"CANARY_RELEASE": "forged"}})
    with pytest.raises(DeployError, match="CANARY_RELEASE is set by the deployer"):
        await deployer.start(placement(exchange, manifest=manifest))
    assert ["systemctl", "start", UNIT] not in fake.calls()


def test_env_file_values_are_quoted_as_systemd_reads_them():
    values = {"A": 'say "hi" to $HOME and `cmd` \\ back', "B": "'single'", "C": ""}
    text = render_env_file(values, UNIT)
    assert 'A="say \\"hi\\" to \\$HOME and \\`cmd\\` \\\\ back"' in text.splitlines()
    assert parse_env_file(text) == values
    with pytest.raises(DeployError, match="the value of D holds a control character"):
        render_env_file({"D": "two\nlines"}, UNIT)


def test_the_template_unit_reads_the_files_where_the_deployer_writes_them():
    unit: dict[str, list[str]] = {}
    for line in TEMPLATE.read_text().splitlines():
        name, sep, value = line.partition("=")
        if sep and not line.startswith("#"):
            unit.setdefault(name, []).append(value)
    assert unit["EnvironmentFile"] == [f"{DEFAULT_ENV_DIR}/%i.env"]
    assert unit["BindReadOnlyPaths"] == [f"{DEFAULT_ENV_DIR}/%i.config.json", f"{DEFAULT_ENV_DIR}/%i.exchange.json"]
    assert unit["ExecStart"] == ["/usr/bin/env -S ${CANARY_COMMAND}"]
    assert unit["Restart"] == ["no"]
