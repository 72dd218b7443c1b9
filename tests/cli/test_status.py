"""canaryctl status answers "is the canary healthy?" from real rows, as a real process.

The rows are written through the store's own API (releases, a rollout with its decision state,
the stage run, verdict changes, deployments, a queued command, a rollback plan that ran and
failed), as the daemon writes them; the stage started 15 minutes ago by this host's clock, so
the time left is known. --watch runs on a pseudo-terminal and is stopped with SIGINT.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import signal
import sqlite3
import struct
import subprocess
import sys
import termios
import time
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from controller import store
from controller.analysis.evaluator import Evaluator
from controller.analysis.observation import Heartbeat, Observation
from controller.analysis.policy import PolicyFile
from controller.analysis.verdict import Outcome, Verdict
from controller.config.yamlfile import load_model_text
from controller.errors import StoreError
from controller.rollout import decide
from controller.rollout.decide import State, Status
from controller.rollout.info import create_rollout, get_rollout, save_decision
from controller.rollout.rollback import Rollback, load_plan
from controller.rollout.site import Site
from controller.store import summary
from controller.store.rollouts import current_stage_run
from controller.store.verdicts import VerdictLog
from tests.support.canaryctl import assert_refused, canaryctl
from tests.support.checkout import REPO
from tests.support.ops_rollout import PIPELINE, STAGE_AGO, canary, verdict

def _json(result) -> dict:
    assert result.code == 0, result
    return json.loads(result.out)


# ---------------------------------------------------------------- one screen

async def test_status_shows_the_stage_time_left_verdicts_and_what_is_pending(db, db_url):
    info, _ = await canary(db)

    result = canaryctl("status", "1.1.0", db=db_url)

    assert result.code == 0, result
    out = result.out
    assert f"rollout {info.id} · release 1.1.0 · running" in out
    assert "1.0.0 live on sim/master" in out
    minutes = int(re.search(r"(\d+)m \d+s left of 1h 00m", out).group(1))
    assert 43 <= minutes <= 44
    assert "cap 2 % · measured 1.50 % (c-capital-share-within-cap" in out
    assert "pending: owner-review" in out
    assert re.search(r"c-queue-latency-p95\s+fail\s+0\.62\s+< 0\.5\s+▁█ ↑", out), out
    assert re.search(r"c-exchange-leverage-matches-config \[symbol=ETHUSDT\]\s+pass\s+0\s+== 0", out), out
    assert "last breach" in out and "c-queue-latency-p95 fail 0.62 vs < 0.5" in out
    assert "promote (command" in out and "by bob" in out and "is `canaryctl run` up?" in out
    assert f"canaryctl signoff {info.id} C --by NAME" in out
    assert "\x1b[" not in out  # not a terminal: no colour


async def test_a_policy_shows_its_worst_group_and_a_breach_in_the_making_as_pending(sqlite_db, sqlite_url):
    info, clock = await canary(sqlite_db)
    run_id = await current_stage_run(sqlite_db, info.id, "C")
    log = VerdictLog(sqlite_db, info.id, run_id)
    await log.resume()
    at = clock.time()
    leverage, latency = "c-exchange-leverage-matches-config", "c-queue-latency-p95"
    await log.record([verdict(leverage, Outcome.FAIL, at, 3.0, 0.0, condition="== 0", action="rollback",
                               group=(("symbol", "SOLUSDT"),), reason="3 is not == 0")])
    await log.record([verdict(leverage, Outcome.PASS, at + 1, 0.0, 0.0, condition="== 0",
                               group=(("symbol", "BTCUSDT"),)),  # newer, but another group: SOL still fails
                      # it failed before: now a pass, its condition still false, its `for` not run out
                      replace(verdict(latency, Outcome.PASS, at + 1, 0.58, 0.5, condition="< 0.500",
                                       reason="breaching for 20 s of 60 s"), breaching_since=at - 19)])

    result = canaryctl("status", str(info.id), "--json", db=sqlite_url)
    lines = {p["policy"]: p for p in _json(result)["rollouts"][0]["policies"]}
    assert (lines[leverage]["verdict"], lines[leverage]["group"]) == ("fail", {"symbol": "SOLUSDT"})
    assert (lines[latency]["verdict"], lines[latency]["pending"]) == ("pass", True)
    screen = canaryctl("status", str(info.id), db=sqlite_url).out
    assert re.search(r"c-queue-latency-p95\s+pending\s+0\.58\s+< 0\.5", screen), screen
    assert re.search(r"c-exchange-leverage-matches-config \[symbol=SOLUSDT\]\s+fail", screen), screen


QUEUE_LATENCY = load_model_text(PolicyFile, """\
stage: C
policies:
  - name: c-order-queue-latency
    checklist: "C5: queue latency"
    source: bot
    metric: strategy_queue_latency_seconds
    aggregate: max
    window: 15m
    condition: "< 0.5"
    for: 10m
    on_breach: rollback
    on_nodata: {action: hold, stale_after: 5m}
""", "stage-c.yaml").policies


async def test_a_pass_that_turns_pending_is_shown_pending_with_since_when_and_the_time_left(sqlite_db, sqlite_url):
    """The evaluator's own verdicts, stored as the daemon stores them: a plain pass, then a value past
    the threshold while `for` has not run out. The status says pending, since when, and how long
    until `for` runs out; a pending that goes on is not stored again."""
    info, clock = await canary(sqlite_db)
    log = VerdictLog(sqlite_db, info.id, await current_stage_run(sqlite_db, info.id, "C"))
    await log.resume()
    evaluator = Evaluator(QUEUE_LATENCY)
    now = time.time()  # the status measures time left on this host's clock
    start, breach = now - 180, now - 60

    def reads(value: float, at: float) -> list[Verdict]:
        evaluator.heartbeat(Heartbeat("bot", at))
        evaluator.observe(Observation("bot", "strategy_queue_latency_seconds", (), value, at))
        return evaluator.evaluate(at)

    assert len(await log.record(reads(0.2, start))) == 1
    (pending,) = reads(0.8, breach)
    assert (pending.outcome, pending.breaching_since, pending.fails_at) == (Outcome.PASS, breach, breach + 600)
    await log.record([pending])
    assert await log.record(reads(0.9, now - 30)) == []

    line = next(p for p in _json(canaryctl("status", str(info.id), "--json", db=sqlite_url))["rollouts"][0]["policies"]
                if p["policy"] == "c-order-queue-latency")
    assert (line["verdict"], line["pending"], line["value"]) == ("pass", True, 0.8)
    assert line["pending_since"] == datetime.fromtimestamp(breach, tz=UTC).isoformat()
    assert line["fails_at"] == datetime.fromtimestamp(breach + 600, tz=UTC).isoformat()
    assert 500 < line["fails_in_seconds"] <= 540
    screen = canaryctl("status", str(info.id), db=sqlite_url).out
    assert re.search(r"c-order-queue-latency\s+pending\s+0\.8\s+< 0\.5 .*past the threshold since "
                     r"\d\d:\d\d:\d\d UTC \(1m 0\ds ago\); fails in (8m [2-5]\ds|9m 00s) unless it recovers", screen), screen


async def test_status_json_carries_the_same_facts_in_a_versioned_document(db, db_url):
    info, _ = await canary(db)

    doc = _json(canaryctl("status", str(info.id), "--json", db=db_url))

    assert doc["version"] == 1 and [r["id"] for r in doc["rollouts"]] == [info.id]
    rollout = doc["rollouts"][0]
    assert (rollout["release"], rollout["state"], rollout["stage"]["name"]) == ("1.1.0", "running", "C")
    assert rollout["owner"] is None  # no daemon has claimed it
    assert rollout["baseline"] == {"release": "1.0.0", "live": True, "environment": "sim", "account": "master"}
    assert STAGE_AGO - 120 < 3600 - rollout["stage"]["remaining_seconds"] < STAGE_AGO + 60
    assert rollout["capital_share"] == {"cap": "0.02", "measured": 0.015, "policy": "c-capital-share-within-cap",
                                        "at": rollout["capital_share"]["at"]}
    policies = {p["policy"]: p for p in rollout["policies"]}
    assert [p["policy"] for p in rollout["policies"]][0] == "c-queue-latency-p95"  # failures first
    latency = policies["c-queue-latency-p95"]
    assert (latency["verdict"], latency["value"], latency["threshold"], latency["condition"], latency["action"]) == \
        ("fail", 0.62, "0.5", "< 0.500", "hold")
    assert latency["trend"] == [0.21, 0.62]
    assert policies["c-capital-share-within-cap"]["trend"] == [0.012, 0.015]
    assert policies["c-exchange-leverage-matches-config"]["group"] == {"symbol": "ETHUSDT"}
    assert rollout["signoffs"] == {"required": ["owner-review"], "pending": ["owner-review"], "overdue": [],
                                   "signed": {}, "os_users": {}}
    assert [(c["kind"], c["actor"]) for c in rollout["pending_commands"]] == [("promote", "bob")]
    assert rollout["last_breach"]["policy"] == "c-queue-latency-p95"
    assert rollout["last_rollback"] is None


async def test_a_waiting_rollout_shows_since_when_and_its_deadline(sqlite_db, sqlite_url):
    info, clock = await canary(sqlite_db)
    started = info.state.stage_started
    await save_decision(sqlite_db, clock, info, State(Status.PAUSED, 0, started, paused_from=Status.RUNNING,
                                                       reason="paused by an operator", waiting_since=started + 60))

    screen = canaryctl("status", str(info.id), db=sqlite_url).out
    waiting = _json(canaryctl("status", str(info.id), "--json", db=sqlite_url))["rollouts"][0]["waiting"]

    assert re.search(r"waiting +waiting since \S+ \S+ UTC \(1[34]m \d\ds ago\) \(deadline in 23h 4\dm, then "
                     r"alerts\)", screen), screen
    assert waiting["since"] == datetime.fromtimestamp(started + 60, tz=UTC).isoformat()
    assert (waiting["deadline_seconds"], waiting["on_deadline"], waiting["overdue"]) == (86400.0, "alert", False)
    assert 86400 - STAGE_AGO - 60 < waiting["remaining_seconds"] < 86400 - STAGE_AGO + 120


async def test_a_wait_past_its_deadline_shows_overdue(sqlite_db, sqlite_url):
    info, clock = await canary(sqlite_db)
    since = info.state.stage_started - 86400 - 120
    await save_decision(sqlite_db, clock, info, State(Status.AWAITING_SIGNOFF, 0, info.state.stage_started,
                                                       waiting_since=since, waiting_overdue=True))

    screen = canaryctl("status", str(info.id), db=sqlite_url).out
    waiting = _json(canaryctl("status", str(info.id), "--json", db=sqlite_url))["rollouts"][0]["waiting"]

    assert re.search(r"\(deadline passed 1[67]m \d\ds ago: overdue, alerted\)", screen), screen
    assert waiting["overdue"] and waiting["remaining_seconds"] == 0.0


async def test_a_running_rollout_does_not_wait(sqlite_db, sqlite_url):
    info, _ = await canary(sqlite_db)
    assert _json(canaryctl("status", str(info.id), "--json", db=sqlite_url))["rollouts"][0]["waiting"] is None
    assert "waiting since" not in canaryctl("status", str(info.id), db=sqlite_url).out

async def test_a_failed_rollback_shows_its_step_progress_and_how_to_resume(sqlite_db, sqlite_url):
    info, clock = await canary(sqlite_db)
    rollback = Rollback(sqlite_db, Site(clock, {}), attempts=1)  # no environments: its first step cannot reach sim
    await rollback.plan(info, trigger="operator", reason="fills look wrong")
    outcome = await rollback.run(info)
    assert not outcome.ok and outcome.failed_step == "stop_release"
    await save_decision(sqlite_db, clock, info, State(Status.FAILED, 0, info.state.stage_started,
                                                       reason=f"rollback step failed: {outcome.error}"))

    text = canaryctl("status", "1.1.0", db=sqlite_url)
    doc = _json(canaryctl("status", "1.1.0", "--json", db=sqlite_url))

    assert text.code == 0, text
    assert "0/6 steps done, stop_release failed · operator: fills look wrong" in text.out
    assert "✗ stop_release" in text.out and "no environment 'sim'" in text.out
    assert f"canaryctl rollback {info.id} --reason TEXT resumes the rollback at stop_release" in text.out
    last = doc["rollouts"][0]["last_rollback"]
    assert (last["trigger"], last["done"], last["total"], last["current"]) == ("operator", 0, 6, "stop_release")
    assert [s["name"] for s in last["steps"]] == ["stop_release", "cancel_orders", "positions", "restore_leverage",
                                                  "start_previous", "verify_previous"]
    assert [s["state"] for s in last["steps"]] == ["failed"] + ["pending"] * 5
    assert doc["rollouts"][0]["stage"]["remaining_seconds"] is None  # a failed rollout's stage does not run


async def test_without_rollout_it_shows_the_rollouts_under_way_else_the_latest(sqlite_db, sqlite_url):
    empty = canaryctl("status", db=sqlite_url)
    assert empty.code == 0 and "no rollouts yet" in empty.out
    assert _json(canaryctl("status", "--json", db=sqlite_url))["rollouts"] == []

    info, clock = await canary(sqlite_db)
    assert [r["id"] for r in _json(canaryctl("status", "--json", db=sqlite_url))["rollouts"]] == [info.id]

    await save_decision(sqlite_db, clock, info, State(Status.ROLLED_BACK, 0, info.state.stage_started))
    second = await create_rollout(sqlite_db, clock, version="1.0.0", pipeline=PIPELINE, actor="tester")
    assert [r["id"] for r in _json(canaryctl("status", "--json", db=sqlite_url))["rollouts"]] == [second.id]
    await save_decision(sqlite_db, clock, second, State(Status.PROMOTED, 1))
    latest = _json(canaryctl("status", "--json", db=sqlite_url))["rollouts"]
    assert [(r["id"], r["state"]) for r in latest] == [(second.id, "promoted")]


async def test_an_unknown_rollout_is_refused_with_a_hint(sqlite_db, sqlite_url):
    await canary(sqlite_db)
    assert_refused(canaryctl("status", "9.9.9", db=sqlite_url), "no rollout '9.9.9'", "canaryctl rollout list")
    assert_refused(canaryctl("status", "42", "--watch", db=sqlite_url), "no rollout '42'")


def test_a_missing_database_is_not_created_and_the_error_says_how_to_make_one(tmp_path):
    path = tmp_path / "nowhere.db"
    result = canaryctl("status", db=f"sqlite:///{path}")
    assert result.code == 1 and "canaryctl db upgrade" in result.err and "Traceback" not in result.err
    assert not path.exists()


def test_an_unmigrated_database_says_to_upgrade(sqlite_url):
    sqlite3.connect(sqlite_url.removeprefix("sqlite:///")).execute("CREATE TABLE t (x)").connection.close()
    result = canaryctl("status", db=sqlite_url)
    assert result.code == 1 and "canaryctl db upgrade" in result.err and "Traceback" not in result.err


def test_the_summary_reads_the_statuses_decide_writes():
    assert store.TERMINAL == {s.value for s in decide.TERMINAL}
    assert summary.JUDGED == {s.value for s in decide.JUDGED}
    assert summary.WAITING == {s.value for s in decide.WAITING}


async def test_rollout_refs_resolve_as_records_get_rollout_does(sqlite_db, sqlite_url):
    from controller.store.readonly import open_reader

    info, _ = await canary(sqlite_db)
    reader = open_reader(sqlite_url)
    try:
        for ref in (str(info.id), "1.1.0"):
            assert summary.resolve(reader, ref) == (await get_rollout(sqlite_db, ref)).id
    finally:
        reader.close()



@pytest.mark.parametrize(("column", "damage", "says"), [
    ("pipeline", "{not json", "its stored pipeline is not JSON"),
    ("decision", '{"stage": 5, "status": "running"}', "its decision state names stage 5 of a pipeline of 2 stages"),
    ("state", "promoted", "its state column says 'promoted' and its decision state 'running'"),
])
async def test_a_damaged_rollout_row_is_refused_by_the_engine_and_by_status_alike(sqlite_db, sqlite_url, column,
                                                                                  damage, says):
    info, _ = await canary(sqlite_db)
    conn = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"))
    with conn:
        conn.execute(f"UPDATE rollouts SET {column} = ? WHERE id = ?", (damage, info.id))
    conn.close()
    refusal = f"rollout {info.id}: {says} (a damaged row)"
    with pytest.raises(StoreError) as caught:
        await get_rollout(sqlite_db, info.id)
    assert str(caught.value) == refusal
    result = canaryctl("status", "--json", db=sqlite_url)
    assert result.code == 1 and refusal in result.err and "Traceback" not in result.err

# ---------------------------------------------------------------- --watch

def _interruptible() -> None:
    """Ctrl-C as at an operator's terminal. A process started by a background job (a script's ``&``,
    nohup) inherits SIGINT ignored, and Python then installs no KeyboardInterrupt handler: the watch
    would never stop, and its test would wait for the suite's timeout."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _spawn_on_pty(args: list[str], env: dict[str, str]) -> tuple[subprocess.Popen, int]:
    main, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 60, 250, 0, 0))  # rows, columns
    proc = subprocess.Popen([sys.executable, "-m", "controller", *args], stdin=secondary, stdout=secondary,
                            stderr=secondary, env=env, cwd=REPO, start_new_session=True, preexec_fn=_interruptible)
    os.close(secondary)
    return proc, main


def _read_until(fd: int, done, timeout: float = 20.0) -> str:
    seen = b""
    deadline = time.monotonic() + timeout
    while not done(seen.decode(errors="replace")) and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                seen += os.read(fd, 65536)
            except OSError:  # the child closed the terminal
                break
    return seen.decode(errors="replace")


def _env(url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CANARY_DB", "CANARY_CONFIG", "NO_COLOR")}
    return {**env, "CANARY_DB": url, "TERM": "xterm", **extra}


def _time_left(frames: str) -> list[str]:
    """The "44m 59s left of ..." of each frame drawn, its terminal codes taken out."""
    return re.findall(r"(\d+m \d+s) left of", re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", frames))


async def test_watch_redraws_in_place_counts_down_and_exits_130_on_ctrl_c(sqlite_db, sqlite_url):
    await canary(sqlite_db)
    proc, fd = _spawn_on_pty(["status", "1.1.0", "--watch", "--interval", "1.1"], _env(sqlite_url))
    try:
        # "Ctrl-C to stop" heads a frame: read until three whole frames have come, their time
        # left included (a busy pty hands over a frame's header before the rest of it).
        frames = _read_until(fd, lambda text: len(_time_left(text)) >= 3)
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=20)
        tail = _read_until(fd, lambda text: "\x1b[?25h" in text, timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(fd)

    assert code == 130
    assert frames.count("\x1b[H") >= 3 and frames.startswith("\x1b[?25l\x1b[2J")  # redrawn from the top
    left = _time_left(frames)
    assert frames.count("Ctrl-C to stop") >= 3
    assert len(left) >= 3 and len(set(left)) >= 2, left  # the time left counts down
    assert "\x1b[32m" in frames or "\x1b[1;31m" in frames  # colour on a terminal
    assert "\x1b[?25h" in frames + tail  # the cursor comes back


async def test_watch_honours_no_color_on_a_terminal(sqlite_db, sqlite_url):
    await canary(sqlite_db)
    proc, fd = _spawn_on_pty(["status", "--watch", "--interval", "0.2"], _env(sqlite_url, NO_COLOR="1"))
    try:
        frames = _read_until(fd, lambda text: text.count("Ctrl-C to stop") >= 2)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(fd)
    assert "c-queue-latency-p95" in frames
    assert not re.search(r"\x1b\[[0-9;]*m", frames)  # cursor control only, no colour


async def test_watch_piped_prints_successive_frames_separated_by_a_blank_line(sqlite_db, sqlite_url):
    await canary(sqlite_db)
    proc = subprocess.Popen([sys.executable, "-m", "controller", "status", "--watch", "--interval", "0.2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(sqlite_url), cwd=REPO,
                            preexec_fn=_interruptible)
    try:
        seen = ""
        deadline = time.monotonic() + 20
        while seen.count("Ctrl-C to stop") < 2 and time.monotonic() < deadline:
            seen += proc.stdout.readline().decode()
        proc.send_signal(signal.SIGINT)
        seen += proc.stdout.read().decode()  # not communicate(): it would skip what readline() buffered
        code, err = proc.wait(timeout=20), proc.stderr.read().decode()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 130, err
    assert "\x1b" not in seen
    frames = [f for f in seen.split("\n\ncanaryctl status · every") if f.strip()]
    assert len(frames) >= 2 and all("c-queue-latency-p95" in f for f in frames)


async def test_watch_json_prints_one_document_per_line(sqlite_db, sqlite_url):
    await canary(sqlite_db)
    proc = subprocess.Popen([sys.executable, "-m", "controller", "status", "--watch", "--json", "--interval", "0.2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(sqlite_url), cwd=REPO,
                            preexec_fn=_interruptible)
    try:
        lines = [proc.stdout.readline(), proc.stdout.readline()]
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    docs = [json.loads(line) for line in lines]
    assert [d["version"] for d in docs] == [1, 1] and docs[0]["now"] < docs[1]["now"]
    assert proc.returncode == 130


@pytest.mark.parametrize(("args", "drawn_with"), [(["--json"], ""), ([], "rich")])
async def test_status_imports_nothing_heavy(sqlite_db, sqlite_url, args, drawn_with):
    """--json loads nothing heavy; the screen loads only what draws it."""
    await canary(sqlite_db)
    probe = ("import sys\nfrom controller.cli.app import main\n"
             f"try:\n    main(['status', *{args!r}])\nexcept SystemExit as e:\n    code = e.code\n"
             "heavy = sorted(m for m in ('sqlalchemy', 'aiosqlite', 'pydantic', 'aiohttp', 'binance', 'rich', 'yaml',"
             " 'controller.daemon', 'controller.rollout.decide') if m in sys.modules)\n"
             "print(code, ','.join(heavy), file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60,
                          env=_env(sqlite_url), cwd=REPO)
    code, _, heavy = proc.stderr.strip().splitlines()[-1].partition(" ")
    assert (code, heavy) == ("0", drawn_with), proc.stderr


@pytest.mark.parametrize("args", [["rollout", "list"], ["rollout", "show", "1.1.0"], ["release", "list"],
                                  ["audit", "query", "--limit", "10"], ["config", "show", "1.1.0"],
                                  ["config", "diff", "1.0.0", "1.1.0"]], ids=" ".join)
async def test_the_read_commands_import_no_sqlalchemy_on_sqlite(sqlite_db, sqlite_url, args):
    """Like `status`, they read through `store.readonly`: they start in a blink (`bench/cli_cold.py`)."""
    await canary(sqlite_db)
    probe = ("import sys\nfrom controller.cli.app import main\n"
             f"try:\n    main({args!r})\nexcept SystemExit as e:\n    code = e.code\n"
             "heavy = sorted(m for m in ('sqlalchemy', 'aiosqlite', 'asyncio', 'pydantic', 'aiohttp', 'binance',"
             " 'controller.daemon', 'controller.rollout.decide') if m in sys.modules)\n"
             "print(code, ','.join(heavy), file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60,
                          env=_env(sqlite_url), cwd=REPO)
    code, _, heavy = proc.stderr.strip().splitlines()[-1].partition(" ")
    assert (code, heavy) == ("0", ""), proc.stderr


async def test_rollout_show_and_list_say_what_the_engine_reads_from_the_store(sqlite_db, sqlite_url):
    """Read without SQLAlchemy, a rollout is what the engine's `RolloutInfo` and rollback plan say of it."""
    info, clock = await canary(sqlite_db)
    rollback = Rollback(sqlite_db, Site(clock, {}), attempts=1)  # no environments: its first step cannot reach sim
    await rollback.plan(info, trigger="operator", reason="fills look wrong")
    outcome = await rollback.run(info)
    info = await save_decision(sqlite_db, clock, info, State(Status.FAILED, 0, info.state.stage_started,
                                                              signoffs={"C/owner-review": "alice"},
                                                              reason=f"rollback step failed: {outcome.error}"))
    info = await get_rollout(sqlite_db, info.id)
    steps = await load_plan(sqlite_db, info.id)

    shown = canaryctl("rollout", "show", "1.1.0", "--json", db=sqlite_url)
    listed = canaryctl("rollout", "list", "--json", db=sqlite_url)
    text = canaryctl("rollout", "show", str(info.id), db=sqlite_url)

    assert json.loads(shown.out) == {**info.to_json(), "rollback_steps": [
        {"position": s.position, "name": s.name, "state": s.state, "attempts": s.attempts,
         "account": s.detail.get("account"), "error": s.error} for s in steps]}
    assert [json.loads(line) for line in listed.out.splitlines()] == [info.to_json()]
    assert text.out.splitlines()[:3] == [f"rollout {info.id}: 1.1.0 (failed, stage C); baseline 1.0.0",
                                         f"  reason: {info.state.reason}", "  signed: C/owner-review by alice"]
    assert "stop_release" in text.out and "canary" in text.out and outcome.error[:30] in text.out


async def test_the_read_commands_read_each_backend_as_the_store_does(db, db_url):
    """On SQLite without SQLAlchemy, on PostgreSQL through it: the same records, the same filters."""
    from controller.store.releases import get_release

    info, _ = await canary(db)
    info = await get_rollout(db, info.id)
    released = await get_release(db, "1.0.0")

    listed = [json.loads(line) for line in canaryctl("rollout", "list", "--json", db=db_url).out.splitlines()]
    shown = canaryctl("rollout", "show", "1.1.0", db=db_url)
    releases = [json.loads(line) for line in canaryctl("release", "list", "--json", db=db_url).out.splitlines()]
    added = canaryctl("audit", "query", "--since", "1d", "--kind", "release.added", "--json", db=db_url)
    none_yet = canaryctl("audit", "query", "--since", "2099-01-01T00:00Z", db=db_url)
    snapshot = canaryctl("config", "show", released.config_sha256[:8], "--json", db=db_url)

    assert listed == [info.to_json()]
    assert shown.code == 0 and shown.out.startswith(f"rollout {info.id}: 1.1.0 (running, stage C); baseline 1.0.0")
    assert releases[0] == released.to_json() and [r["version"] for r in releases] == ["1.0.0", "1.1.0"]
    assert [(e["kind"], e["release"]) for e in map(json.loads, added.out.splitlines())] == [
        ("release.added", "1.0.0"), ("release.added", "1.1.0")]
    assert none_yet.code == 0 and "no audit events match" in none_yet.err
    assert json.loads(snapshot.out)["sha256"] == released.config_sha256
