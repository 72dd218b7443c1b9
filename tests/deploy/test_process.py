"""ProcessDeployer with real processes: the reference bot on a started simulator, and a stub
that only serves /metrics where a test needs a bot that misbehaves."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from controller.deploy import DeployError, Placement, ProcessDeployer
from controller.procfs import read_stat
from reference_bot.__main__ import parse
from tests.support.checkout import REPO
from tests.support.placements import exchange_of, placement, stub_manifest

INSTANCE = "sim-canary"


@pytest.fixture
async def deployer(tmp_path, clock):
    deployer = ProcessDeployer(tmp_path / "state", clock)
    yield deployer
    await deployer.stop(INSTANCE, grace=1.0)  # whatever a failing test left running


def folder(deployer: ProcessDeployer) -> Path:
    return deployer.state_dir / "instances" / INSTANCE


def processes_running(path: Path) -> list[int]:
    """The pids whose command line names ``path``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if str(path).encode() in cmdline and read_stat(int(entry.name)).alive:
                found.append(int(entry.name))
    return found


async def get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.text()


async def test_start_returns_once_the_bots_metrics_answer_and_status_names_its_release(sim, deployer, clock):
    running = await deployer.start(placement(exchange_of(sim)))
    status, text = await get(running.metrics_url)
    assert status == 200 and "strategy_leverage_configured" in text
    assert running.instance == INSTANCE and running.release == "1.0.0" and running.started_at == clock.time()
    assert running.log_file == folder(deployer) / "output.log" and running.journal_unit is None
    assert running.metrics_url.startswith("http://127.0.0.1:") and running.metrics_url.endswith("/metrics")
    assert await deployer.status(INSTANCE) == running
    assert os.stat(folder(deployer)).st_mode & 0o777 == 0o700


async def test_the_api_key_is_a_0600_file_and_never_on_the_command_line_in_the_environment_or_the_output(
        sim, deployer):
    access = exchange_of(sim)
    running = await deployer.start(placement(access))
    exchange = folder(deployer) / "exchange.json"
    assert os.stat(exchange).st_mode & 0o777 == 0o600
    assert json.loads(exchange.read_text()) == access
    proc = Path("/proc") / str(running.pid)
    exposed = (proc / "cmdline").read_bytes() + (proc / "environ").read_bytes()
    assert str(exchange).encode() in exposed
    await deployer.stop(INSTANCE)
    output = running.log_file.read_text()
    assert "bot_stopped" in output
    record = (folder(deployer) / "placement.json").read_text()
    for secret in (access["api_key"], access["api_secret"]):
        assert secret.encode() not in exposed and secret not in output and secret not in record


async def test_starting_the_running_release_again_returns_it_and_starts_nothing(sim, deployer):
    first = await deployer.start(placement(exchange_of(sim)))
    again = await deployer.start(placement(exchange_of(sim)))
    assert again == first
    assert processes_running(folder(deployer) / "config.json") == [first.pid]


async def test_another_release_on_a_busy_instance_is_refused_and_the_running_one_keeps_running(sim, deployer):
    first = await deployer.start(placement(exchange_of(sim)))
    with pytest.raises(DeployError, match=f"instance {INSTANCE} runs release 1.0.0 .*stop it before starting 1.1.0"):
        await deployer.start(placement(exchange_of(sim), release="1.1.0", strategy_file="strategy-next.yaml"))
    assert await deployer.status(INSTANCE) == first
    assert read_stat(first.pid).alive


async def test_stop_ends_the_bot_and_removes_its_credentials_and_a_second_stop_finds_nothing(sim, deployer):
    running = await deployer.start(placement(exchange_of(sim)))
    assert await deployer.stop(INSTANCE) == running
    assert read_stat(running.pid) is None  # our child: reaped, no zombie left
    assert not (folder(deployer) / "exchange.json").exists()
    assert json.loads((folder(deployer) / "placement.json").read_text())["stopped"] is True
    assert await deployer.status(INSTANCE) is None
    assert await deployer.stop(INSTANCE) is None
    assert sim.engine.open_orders(sim.accounts["canary"]) == []  # SIGTERM let the bot cancel its orders


async def test_a_new_controller_finds_the_bot_that_outlived_the_killed_one_and_stops_it(tmp_path, sim, clock):
    """The controller is SIGKILLed right after placing the bot: the bot lives on, in its own session."""
    state = tmp_path / "state"
    chosen = placement(exchange_of(sim))
    controller = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CONTROLLER, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    spec = {"state_dir": str(state), "manifest": chosen.manifest.model_dump(mode="json"),
            "config_text": chosen.config_text, "config_sha256": chosen.config_sha256,
            "exchange": chosen.exchange, "env": chosen.env}
    controller.stdin.write(json.dumps(spec).encode())
    controller.stdin.close()
    try:
        pid = int(await asyncio.wait_for(controller.stdout.readline(), timeout=30))
    finally:
        controller.kill()
        await controller.wait()
    assert read_stat(pid).alive
    successor = ProcessDeployer(state, clock)
    found = await successor.status(INSTANCE)
    assert (found.pid, found.release, found.config_sha256) == (pid, "1.0.0", chosen.config_sha256)
    assert (await get(found.metrics_url))[0] == 200
    assert await successor.start(chosen) == found  # adopted, not started twice
    assert await successor.stop(INSTANCE) == found
    assert read_stat(pid) is None or not read_stat(pid).alive
    assert not (state / "instances" / INSTANCE / "exchange.json").exists()


CONTROLLER = """\
import asyncio, json, sys
from pathlib import Path
from controller.clock import SimulatedClock
from controller.config.manifest import ReleaseManifest
from controller.deploy import Placement, ProcessDeployer

spec = json.loads(sys.stdin.read())

async def main():
    deployer = ProcessDeployer(Path(spec["state_dir"]), SimulatedClock())
    running = await deployer.start(Placement(
        instance="sim-canary", release="1.0.0", manifest=ReleaseManifest.model_validate(spec["manifest"]),
        config_text=spec["config_text"], config_sha256=spec["config_sha256"], exchange=spec["exchange"],
        env=spec["env"]))
    print(running.pid, flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def _controller_killed_after_the_spawn(state: Path, chosen: Placement) -> None:
    """Run CONTROLLER with the failpoint between spawn and record armed: it dies there."""
    controller = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CONTROLLER, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        env={**os.environ, "CANARY_FAILPOINTS": "deploy.process.spawned"})
    spec = {"state_dir": str(state), "manifest": chosen.manifest.model_dump(mode="json"),
            "config_text": chosen.config_text, "config_sha256": chosen.config_sha256,
            "exchange": chosen.exchange, "env": chosen.env}
    controller.stdin.write(json.dumps(spec).encode())
    controller.stdin.close()
    assert await asyncio.wait_for(controller.wait(), timeout=30) == -9


async def test_a_bot_spawned_by_a_controller_killed_before_recording_it_is_killed_before_another_starts(
        tmp_path, sim, clock):
    """Two bots must never trade one account: the stray no placement.json names holds the
    instance's lock, and the next start (or stop) kills it."""
    state = tmp_path / "state"
    chosen = placement(exchange_of(sim))
    await _controller_killed_after_the_spawn(state, chosen)
    config = state / "instances" / INSTANCE / "config.json"
    [stray] = processes_running(config)
    assert not (state / "instances" / INSTANCE / "placement.json").exists()
    successor = ProcessDeployer(state, clock)
    try:
        assert await successor.status(INSTANCE) is None
        running = await successor.start(chosen)
        assert processes_running(config) == [running.pid], "two bots on one account"
        assert read_stat(stray) is None or not read_stat(stray).alive
        await successor.stop(INSTANCE, grace=1.0)
        assert processes_running(config) == []
    finally:
        await successor.stop(INSTANCE, grace=1.0)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(stray, signal.SIGKILL)


async def test_stop_kills_a_stray_even_when_no_record_names_a_bot(tmp_path, sim, clock):
    state = tmp_path / "state"
    await _controller_killed_after_the_spawn(state, placement(exchange_of(sim)))
    config = state / "instances" / INSTANCE / "config.json"
    [stray] = processes_running(config)
    successor = ProcessDeployer(state, clock)
    try:
        assert await successor.stop(INSTANCE, grace=1.0) is None  # nothing recorded ran
        assert processes_running(config) == []
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(stray, signal.SIGKILL)


async def test_a_recorded_pid_now_held_by_another_process_is_not_the_bot(deployer, exchange):
    await deployer.start(placement(exchange, manifest=stub_manifest()))
    await deployer.stop(INSTANCE)
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        record_file = folder(deployer) / "placement.json"
        record = json.loads(record_file.read_text())
        # As if the bot had died and Linux had given its pid to the stranger: same pid, other start time.
        record.update(stopped=False, pid=stranger.pid, start_ticks=read_stat(stranger.pid).start_ticks - 1)
        record_file.write_text(json.dumps(record))
        assert await deployer.status(INSTANCE) is None
        assert await deployer.stop(INSTANCE) is None
        assert stranger.poll() is None  # not signalled
    finally:
        stranger.kill()
        stranger.wait()


async def test_a_bot_that_exits_at_once_fails_the_start_with_the_tail_of_its_output(sim, deployer):
    bad = '{"symbols": {"BTCUSDT": {"leverage": 500}}}'
    access = exchange_of(sim)
    with pytest.raises(DeployError) as refused:
        await deployer.start(placement(access, config_text=bad))
    message = str(refused.value)
    assert message.startswith(f"instance {INSTANCE}: release 1.0.0 ended during start-up with status 2; "
                              "its last output:\n")
    assert "symbols.BTCUSDT.leverage: expected an integer from 1 to 125, got 500" in message
    assert access["api_secret"] not in message and access["api_key"] not in message
    assert await deployer.status(INSTANCE) is None
    assert not (folder(deployer) / "exchange.json").exists()


async def test_a_bot_whose_metrics_never_answer_is_stopped_at_the_ready_timeout(tmp_path, clock, exchange):
    deployer = ProcessDeployer(tmp_path / "state", clock, ready_timeout=0.5)
    with pytest.raises(DeployError, match=r"metrics \(http://127\.0\.0\.1:\d+/metrics\) did not answer within 0.5 s"):
        await deployer.start(placement(exchange, manifest=stub_manifest("never-ready")))
    pid = json.loads((tmp_path / "state" / "instances" / INSTANCE / "placement.json").read_text())["pid"]
    assert read_stat(pid) is None
    assert await deployer.status(INSTANCE) is None


async def test_a_bot_that_ignores_sigterm_is_killed_once_the_grace_has_passed(deployer, exchange):
    running = await deployer.start(placement(exchange, manifest=stub_manifest("ignores-sigterm")))
    began = time.monotonic()
    assert await deployer.stop(INSTANCE, grace=0.3) == running
    assert 0.3 <= time.monotonic() - began < 2.0
    assert read_stat(running.pid) is None


@pytest.mark.parametrize("grace, told", [(5.0, True), (0.0, False)], ids=["graceful", "killed-at-once"])
async def test_a_stop_without_grace_kills_the_bot_without_a_sigterm_first(deployer, exchange, tmp_path, grace, told):
    running = await deployer.start(placement(exchange, manifest=stub_manifest("tells-sigterm")))
    assert await deployer.stop(INSTANCE, grace=grace) == running
    assert read_stat(running.pid) is None
    output = (tmp_path / "state" / "instances" / INSTANCE / "output.log").read_text()
    assert ("got SIGTERM" in output) is told, output


async def test_the_bot_gets_a_minimal_environment_plus_the_manifests_and_the_placements(
        deployer, exchange, monkeypatch):
    monkeypatch.setenv("CANARY_DB_PASSWORD", "hunter2")  # the controller's own: not the bot's business
    manifest = stub_manifest().model_copy(update={"env": {"STRATEGY_MODE": "canary", "CANARY_SIM_SPEED": "1"}})
    running = await deployer.start(placement(exchange, manifest=manifest))
    environ = dict(item.split("=", 1) for item in
                   (Path("/proc") / str(running.pid) / "environ").read_text().split("\0") if item)
    assert environ.pop("STRATEGY_MODE") == "canary" and environ.pop("CANARY_SIM_SPEED") == "5.0"  # placement wins
    assert set(environ) <= {"PATH", "HOME", "LANG", "PYTHONPATH"}


def test_an_instance_name_that_is_not_a_plain_file_name_is_refused(exchange):
    for name in ("../etc", "a/b", ".hidden", "-flag", ""):
        with pytest.raises(DeployError, match="is not an instance name"):
            placement(exchange, instance=name)


def test_an_exchange_access_without_its_secret_is_refused_without_showing_a_value(exchange):
    with pytest.raises(DeployError, match="lacks api_secret$"):
        Placement(**{**placement(exchange).__dict__, "exchange": {**exchange, "api_secret": ""}})


def test_the_reference_bot_takes_its_speed_from_CANARY_SIM_SPEED_unless_told_on_its_command_line(monkeypatch):
    required = ["--config", "c.yaml", "--exchange", "e.json"]
    assert parse(required).speed is None
    monkeypatch.setenv("CANARY_SIM_SPEED", "5")
    assert parse(required).speed == 5.0
    assert parse([*required, "--speed", "2"]).speed == 2.0
    monkeypatch.setenv("CANARY_SIM_SPEED", "fast")
    with pytest.raises(SystemExit):
        parse(required)
