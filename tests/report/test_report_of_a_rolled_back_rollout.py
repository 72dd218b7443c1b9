"""`canaryctl report` on a rollout the daemon really rolled back, and the archive it writes.

Once per module, the daemon runs in this process on the simulator (clock 10x): 1.0.0 is the
baseline on the master account; 1.1.0 walks the canary stage, is signed off by alice and
promoted by force; then 1.2.0 (SOLUSDT set to leverage 10, its config says 3) is caught (by the
bot's own mismatch count or the exchange's view, whichever is judged first) and rolled back,
which puts 1.1.0 back on the canary account.
While that restored bot still runs (its credentials file on disk), one archive is written;
the rest of the module reads the stopped daemon's database and state folder with canaryctl
as real processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import io
import json
import os
import pty
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from controller.config.yamlfile import load_model_text
from controller.rollout.decide import Status
from controller.rollout.info import create_rollout
from controller.rollout.pipeline import Pipeline
from controller.rollout.rollback import STEPS
from controller.store.commands import await_ack, submit_command
from tests.daemon.inprocess import BOT, CANARY_PIPELINE, daemon_on_sim
from tests.support.canaryctl import assert_refused, canaryctl

SPEED = 10.0
RELEASES = {"1.0.0": "strategy.yaml", "1.1.0": "strategy-next.yaml", "1.2.0": "strategy-defect-leverage.yaml"}
ROOT = "rollout-2-1.2.0"
CATCHERS = {  # the two policies that see the wrong leverage, and the checklist line each enforces
    "c-leverage-mismatch-zero": ("C4", "Ensure alerting (mismatch, bucket overuse, error spikes) is active and quiet."),
    "c-exchange-leverage-matches-config": ("C2", "Validate real Binance `/fapi/v1/leverage` responses match config."),
}
"""Whichever of the bot's own count and the exchange's view judges first starts the rollback."""


@dataclass(frozen=True)
class Run:
    url: str
    state: Path
    folder: Path
    live_archive: Path
    secrets: tuple[str, ...]
    """The canary account's API key and secret, as the restored bot's credentials file held them."""

    def ctl(self, *args: str):
        """canaryctl against this run's database and state folder (as `canaryctl run` had it)."""
        return canaryctl(*args, db=self.url, env={"STATE_DIRECTORY": str(self.state)})


async def _command(db, clock, rollout_id: int, kind: str, actor: str, **fields):
    command = await submit_command(db, clock, rollout_id=rollout_id, kind=kind, actor=actor, **fields)
    acked = await await_ack(db, command.id, timeout=30)
    assert acked.outcome == "accepted", acked
    return acked


async def _scenario(folder: Path) -> Run:
    pipeline = load_model_text(Pipeline, CANARY_PIPELINE, "pipeline")
    async with daemon_on_sim(folder, {v: BOT / f for v, f in RELEASES.items()}, speed=SPEED) as site:
        db, clock, state = site.db, site.clock, site.state
        healthy = await create_rollout(db, clock, version="1.1.0", pipeline=pipeline, actor="tester")
        await site.until(healthy.id, Status.RUNNING)
        await _command(db, clock, healthy.id, "signoff", "alice", args={"stage": "C", "items": [], "os_user": "mallory"})
        await _command(db, clock, healthy.id, "promote", "bob", reason="owner accepts a short canary",
                       args={"force": True})
        await site.until(healthy.id, Status.PROMOTED)

        defect = await create_rollout(db, clock, version="1.2.0", pipeline=pipeline, actor="tester")
        final = await site.until(defect.id, Status.ROLLED_BACK, Status.FAILED)
        assert final.status is Status.ROLLED_BACK, final.state.reason

        credentials = state / "instances" / "sim-canary" / "exchange.json"
        assert credentials.exists(), "the restored bot runs: its credentials file is on disk"
        exchange = json.loads(credentials.read_text())
        live = folder / "while-running.tar.gz"
        written = await asyncio.to_thread(canaryctl, "report", "1.2.0", "--state-dir", str(state),
                                          "--archive", str(live), db=site.url)
        assert written.code == 0, written
    return Run(site.url, state, folder, live, (exchange["api_key"], exchange["api_secret"]))


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Run:
    return asyncio.run(_scenario(tmp_path_factory.mktemp("report")))


def members(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive, "r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}


def repack(archive: Path, target: Path, contents: dict[str, bytes]) -> Path:
    with tarfile.open(target, "w:gz") as tar:
        for name, data in contents.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return target


# ---------------------------------------------------------------- the report

def test_the_markdown_report_fills_the_checklist_from_the_rollback(run):
    result = run.ctl("report", "1.2.0")
    assert result.code == 0, result
    md = result.out
    assert "# Stabilization report: rollout 2, release 1.2.0" in md
    assert "Status **rolled_back**" in md
    rollback = md.split("## Rollback")[1].split("## Sign-offs")[0]
    caught_by = rollback.split("Trigger **policy**: ", 1)[1].split(" failed", 1)[0]
    assert caught_by in CATCHERS, rollback
    assert f"- [ ] {CATCHERS[caught_by][1]} — **breached**" in md
    assert f"{caught_by} (C): " in md.split(CATCHERS[caught_by][1])[1].split("\n- [")[0]
    assert "- [ ] `strategy_leverage_mismatch_total` remains `0` across ≥24 h sandbox run. — **not run**" in md
    assert "- [x] Keep rollback plan ready (previous release + config snapshot). — **met**" in md

    breaches = md.split("## Breaches")[1].split("## Rollback")[0]
    assert f"(rolled back) | {caught_by} |" in breaches

    rows = [line.split("|")[2].strip() for line in rollback.splitlines() if line.startswith("| ") and
            line.split("|")[1].strip().isdigit()]
    assert rows == list(STEPS)
    assert "| restore_leverage | canary | done | 1 |" in rollback

    signoffs = md.split("## Sign-offs")[1].split("## Stages")[0]
    assert "| C | owner-review | **not signed** |" in signoffs

    plots = md.split("## Plots")[1].split("## Policies")[0]
    assert "Drawn in the archive as `plots/buckets.svg`" in plots
    assert "c-bucket-usage-within-allocation bucket=" in plots
    assert "no policy of this rollout measures the applied or configured leverage" in plots


def test_the_json_report_is_the_document_the_markdown_comes_from(run):
    result = run.ctl("report", "2", "--format", "json")
    assert result.code == 0, result
    doc = json.loads(result.out)
    assert doc["rollout"]["release"] == "1.2.0" and doc["rollout"]["status"] == "rolled_back"
    assert [s["name"] for s in doc["rollback"]["steps"]] == list(STEPS)
    assert all(s["state"] == "done" for s in doc["rollback"]["steps"])
    caught_by = doc["rollback"]["breach_policy"]
    assert caught_by in CATCHERS
    assert 0 < doc["rollback"]["breach_to_safe_seconds"] <= doc["rollback"]["breach_to_done_seconds"]
    restored = next(r for r in doc["releases"] if "restored by the rollback" in r["roles"])
    assert restored["version"] == "1.1.0"
    [trigger] = [b for b in doc["breaches"] if b["triggered_rollback"]]
    assert trigger["policy"] == caught_by and trigger["value"] > 0
    lines = {line["key"]: line for line in doc["checklist"]}
    key = CATCHERS[caught_by][0]
    assert lines[key]["status"] == "breached" and caught_by in lines[key]["policies"]
    assert lines["C1"]["status"] == "open"  # the capital share passed, but the stage was cut short
    assert lines["done-2"]["status"] == "open"  # not archived: printed
    assert doc["evidence"]["audit_excerpt"]["chain"] == "consistent"
    policy = next(p for p in doc["policies"] if p["name"] == caught_by)
    assert policy["status"] == "breached" and "fail" in [v["outcome"] for v in policy["history"]]


def test_sign_offs_name_who_and_when(run):
    md = run.ctl("report", "1.1.0").out
    assert "| C | owner-review | alice (os user mallory) |" in md.split("## Sign-offs")[1]
    doc = json.loads(run.ctl("report", "1.1.0", "--format", "json").out)
    [owner] = doc["signoffs"]
    assert owner["stage"] == "C" and owner["item"] == "owner-review" and owner["by"] == "alice"
    assert owner["os_user"] == "mallory" and owner["signers"] is None  # one signer is enough on this stage
    assert owner["at"] is not None and owner["at"] <= doc["as_of"]
    lines = {line["key"]: line for line in doc["checklist"]}
    assert lines["done-1"]["status"] == "met" and "C/owner-review by alice" in lines["done-1"]["evidence"][0]
    timeline = [e["text"] for e in doc["timeline"]]
    assert "stage C promoted by force: owner accepts a short canary" in timeline


def test_an_unknown_rollout_is_refused_without_a_traceback(run):
    assert_refused(run.ctl("report", "9.9.9"), "no rollout '9.9.9'")


def test_help_shows_examples():
    result = canaryctl("report", "--help")
    assert result.code == 0 and "canaryctl report verify rollout-7.tar.gz" in result.out, result
    assert "render" in result.out and "verify" in result.out


# ---------------------------------------------------------------- the archive

@pytest.fixture(scope="module")
def original(run) -> dict[str, bytes]:
    archive = run.folder / "original.tar.gz"
    assert run.ctl("report", "1.2.0", "--archive", str(archive)).code == 0
    return members(archive)


def test_the_archive_holds_the_report_and_its_evidence_and_verifies(run):
    archive = run.folder / "report.tar.gz"
    written = run.ctl("report", "1.2.0", "--archive", str(archive))
    assert written.code == 0 and f"wrote {archive}" in written.out, written
    content = members(archive)
    names = sorted(content)
    assert names == sorted(names) and all(n.startswith(f"{ROOT}/") for n in names)
    short = {n.removeprefix(f"{ROOT}/") for n in names}
    assert {"MANIFEST.sha256", "report.md", "report.json", "audit/excerpt.jsonl", "metrics/verdicts.jsonl",
            "logs/sim-canary/output.log", "plots/buckets.svg", "releases/1.2.0.json", "releases/1.1.0.json"} <= short
    assert sum(n.startswith("configs/") for n in short) == 3  # 1.2.0, its baseline 1.0.0, the restored 1.1.0
    md = content[f"{ROOT}/report.md"].decode()
    assert "![Bucket usage vs allocation (+2 % headroom)](plots/buckets.svg)" in md
    assert "- [x] Checklist archived with run artifacts. — **met**" in md
    assert content[f"{ROOT}/plots/buckets.svg"].startswith(b"<?xml")
    excerpt = [json.loads(line) for line in content[f"{ROOT}/audit/excerpt.jsonl"].splitlines()]
    assert excerpt[0]["kind"] == "rollout.created" and json.loads(excerpt[-1]["payload"])["to"] == "rolled_back"

    verified = run.ctl("report", "verify", str(archive))
    assert verified.code == 0 and "intact" in verified.out, verified


def test_the_bots_credentials_never_enter_the_archive(run):
    content = members(run.live_archive)
    assert not [n for n in content if n.endswith("exchange.json")]
    for secret in run.secrets:
        assert not [n for n, data in content.items() if secret.encode() in data], "a credential leaked"
    assert run.ctl("report", "verify", str(run.live_archive)).code == 0


def test_the_same_evidence_gives_the_same_bytes(run, original):
    again = run.folder / "again.tar.gz"
    assert run.ctl("report", "2", "--archive", str(again)).code == 0
    assert again.read_bytes() == (run.folder / "original.tar.gz").read_bytes()


def test_archiving_on_a_terminal_shows_its_progress(run):
    """On a terminal, the steps of the export go to stderr as they happen; piped, only the summary."""
    target = run.folder / "tty.tar.gz"
    pid, fd = pty.fork()
    if pid == 0:  # the child: canaryctl with the pty as its stdout and stderr
        os.environ.pop("CANARY_CONFIG", None)
        os.environ.update({"CANARY_DB": run.url, "STATE_DIRECTORY": str(run.state)})
        os.execv(sys.executable, [sys.executable, "-m", "controller", "report", "1.2.0", "--archive", str(target)])
    output = b""
    with contextlib.suppress(OSError):  # EIO once the child has closed the terminal
        while chunk := os.read(fd, 4096):
            output += chunk
    os.close(fd)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0, output
    lines = output.decode().splitlines()
    assert lines[0] == "report: collecting evidence..."
    assert "report: hashing logs/sim-canary/output.log (" in output.decode()
    assert lines[-1].startswith(f"wrote {target}: rollout 2 (1.2.0)")


def test_an_existing_archive_is_replaced_only_with_force(run):
    target = run.folder / "taken.tar.gz"
    target.write_bytes(b"keep me")
    assert_refused(run.ctl("report", "1.2.0", "--archive", str(target)), "exists", "--force")
    assert target.read_bytes() == b"keep me"
    assert run.ctl("report", "1.2.0", "--archive", str(target), "--force").code == 0
    assert run.ctl("report", "verify", str(target)).code == 0
    assert not [p for p in run.folder.iterdir() if p.name.endswith(".part")]


# ---------------------------------------------------------------- tampering

def tampered(run, name: str, contents: dict[str, bytes]):
    result = run.ctl("report", "verify", str(repack(run.folder / "original.tar.gz", run.folder / name, contents)))
    assert result.code == 1 and "TAMPERED" in result.err, result
    assert "Traceback" not in result.err
    return result.err


def test_a_changed_byte_is_named(run, original):
    md = bytearray(original[f"{ROOT}/report.md"])
    md[100] ^= 0x01
    err = tampered(run, "byte.tar.gz", {**original, f"{ROOT}/report.md": bytes(md)})
    assert "report.md: its SHA-256 is" in err and "(changed)" in err


def test_an_added_member_is_named(run, original):
    err = tampered(run, "added.tar.gz", {**original, f"{ROOT}/logs/extra.log": b"planted\n"})
    assert "logs/extra.log: not listed in the manifest (added)" in err


def test_a_dropped_member_is_named(run, original):
    dropped = {n: d for n, d in original.items() if not n.endswith("logs/sim-canary/output.log")}
    err = tampered(run, "dropped.tar.gz", dropped)
    assert "logs/sim-canary/output.log: listed in the manifest but missing from the archive (removed)" in err


def test_an_edited_audit_excerpt_is_caught_by_its_chain_even_with_its_sum_fixed(run, original):
    import hashlib

    lines = original[f"{ROOT}/audit/excerpt.jsonl"].decode().splitlines()
    event = json.loads(lines[2])
    event["actor"] = "mallory"
    lines[2] = json.dumps(event, sort_keys=True, separators=(",", ":"))
    excerpt = ("\n".join(lines) + "\n").encode()
    manifest = original[f"{ROOT}/MANIFEST.sha256"].decode().splitlines()
    fixed = [f"{hashlib.sha256(excerpt).hexdigest()}  audit/excerpt.jsonl" if line.endswith(" audit/excerpt.jsonl")
             else line for line in manifest]
    err = tampered(run, "chain.tar.gz", {**original, f"{ROOT}/audit/excerpt.jsonl": excerpt,
                                         f"{ROOT}/MANIFEST.sha256": ("\n".join(fixed) + "\n").encode()})
    assert f"audit/excerpt.jsonl: hash chain broken at seq {event['seq']}: its content does not match its hash" \
        in err
    assert "SHA-256 is" not in err  # the manifest agrees: only the chain tells


def test_a_file_that_is_no_archive_is_refused_with_status_2(run):
    junk = run.folder / "junk.tar.gz"
    junk.write_bytes(gzip.compress(b"not a tar file at all")[:20])
    assert_refused(run.ctl("report", "verify", str(junk)), "is not a readable tar.gz archive")
    assert_refused(run.ctl("report", "verify", str(run.folder / "absent.tar.gz")), "no such file")
