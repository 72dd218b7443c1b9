"""canaryctl note: an anomaly logged on a rollout is audited, shown by status until it is resolved, and
reported with its resolution; every refused note exits 2, says why, and writes nothing."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import pytest

from controller.clock import SimulatedClock
from controller.release_files import read_release
from controller.rollout.decide import State, Status
from controller.rollout.info import create_rollout, save_decision
from controller.store import anomalies, audit
from controller.store.releases import add_release
from tests.support.ops_rollout import PIPELINE
from tests.support.canaryctl import assert_refused, canaryctl
from tests.support.checkout import EXAMPLES


async def at_stage_d(db):
    """A rollout of 1.1.0 running the pipeline's last stage (D), where an open anomaly blocks promotion."""
    clock = SimulatedClock(datetime.now(tz=UTC) - timedelta(minutes=10))
    await add_release(db, clock, read_release("1.1.0", EXAMPLES / "demo" / "manifest.yaml",
                                              EXAMPLES / "reference-bot" / "strategy.yaml"), actor="tester")
    info = await create_rollout(db, clock, version="1.1.0", pipeline=PIPELINE, actor="tester")
    return await save_decision(db, clock, info, State(Status.RUNNING, 1, clock.time()))


def _json(result) -> dict:
    assert result.code == 0, result
    return json.loads(result.out)


async def test_an_anomaly_is_shown_in_status_until_resolved_and_reported_with_its_resolution(sqlite_db, sqlite_url):
    info = await at_stage_d(sqlite_db)

    noted = _json(canaryctl("note", "1.1.0", "--anomaly", "fills on ETHUSDT twice the expected size", "--json",
                            db=sqlite_url, env={"CANARY_ACTOR": "alice"}))
    assert (noted["rollout"], noted["stage"], noted["by"], noted["open"]) == (info.id, "D", "alice", True)
    other = canaryctl("note", str(info.id), "--anomaly", "funding paid twice at 08:00", db=sqlite_url)
    assert other.code == 0, other
    second = int(re.search(r"anomaly (\d+) logged on rollout", other.out).group(1))
    assert f"--resolves {second} --text TEXT" in other.out

    rollout = _json(canaryctl("status", "1.1.0", "--json", db=sqlite_url))["rollouts"][0]
    assert [(a["id"], a["by"], a["text"]) for a in rollout["open_anomalies"]] == [
        (noted["id"], "alice", "fills on ETHUSDT twice the expected size"),
        (second, "tester", "funding paid twice at 08:00")]
    assert rollout["open_anomalies"][0]["at"] == noted["at"]
    assert rollout["anomalies_block_promotion"] is True
    screen = canaryctl("status", "1.1.0", db=sqlite_url).out
    assert re.search(rf"anomaly\s+{noted['id']} open · blocks promotion · by alice at \d{{4}}-\d\d-\d\d "
                     r"\d\d:\d\d:\d\d UTC \(.* ago\), stage D: fills on ETHUSDT", screen), screen

    resolved = _json(canaryctl("note", "1.1.0", "--resolves", str(noted["id"]), "--text",
                               "sizing rounding; fixed in config 3f2a", "--json", db=sqlite_url))
    assert resolved["open"] is False and resolved["resolution"]["text"] == "sizing rounding; fixed in config 3f2a"
    rollout = _json(canaryctl("status", "1.1.0", "--json", db=sqlite_url))["rollouts"][0]
    assert [a["id"] for a in rollout["open_anomalies"]] == [second]

    report = _json(canaryctl("report", "1.1.0", "--format", "json", db=sqlite_url))
    assert [(a["id"], a["by"], a["resolution"] and a["resolution"]["by"]) for a in report["anomalies"]] == [
        (noted["id"], "alice", "tester"), (second, "tester", None)]
    markdown = canaryctl("report", "1.1.0", db=sqlite_url).out
    assert "## Anomalies and resolutions" in markdown
    assert re.search(rf"\| {noted['id']} \| D \| alice \| .* \| fills on ETHUSDT twice the expected size \| tester \| "
                     r".* \| sizing rounding; fixed in config 3f2a \|", markdown), markdown
    assert re.search(rf"\| {second} \| D \| tester \| .* \| funding paid twice at 08:00 \| \*\*open\*\* \|", markdown)

    assert (await audit.verify(sqlite_db)).ok
    events = [e async for e in audit.query(sqlite_db, audit.AuditFilter()) if e.kind.startswith("anomaly.")]
    assert [(e.kind, e.actor, e.subject) for e in events] == [
        ("anomaly.noted", "alice", f"rollout:{info.id}"), ("anomaly.noted", "tester", f"rollout:{info.id}"),
        ("anomaly.resolved", "tester", f"rollout:{info.id}")]
    assert events[2].payload["anomaly"] == noted["id"] and "os_user" in events[2].payload


@pytest.mark.parametrize("args, fragment", [
    (["9", "--anomaly", "x"], "no rollout '9'"),
    (["1.1.0", "--anomaly", "   "], "--anomaly: the text is empty"),
    (["1.1.0", "--anomaly", "\x1b\x07\n"], "--anomaly: the text is empty"),
    (["1.1.0", "--anomaly", "x" * 2001], "--anomaly: the text is 2001 characters; expected at most 2000"),
    (["1.1.0"], "give either --anomaly TEXT"),
    (["1.1.0", "--anomaly", "x", "--resolves", "1", "--text", "y"], "give either --anomaly TEXT"),
    (["1.1.0", "--anomaly", "x", "--text", "y"], "--text goes with --resolves"),
    (["1.1.0", "--resolves", "1"], "--resolves ID needs --text TEXT"),
    (["1.1.0", "--resolves", "0", "--text", "y"], "--resolves"),
    (["1.1.0", "--resolves", "NOTED", "--text", ""], "--text: the text is empty"),
    (["1.1.0", "--resolves", "99999", "--text", "y"], "has no anomaly 99999 (its open anomalies: NOTED"),
    (["1.1.0", "--resolves", "DONE", "--text", "again"], "anomaly DONE is already resolved, by tester at "),
    (["1.1.0", "--resolves", "CHAIN", "--text", "y"], "has no anomaly CHAIN"),
])
async def test_a_refused_note_exits_2_says_why_and_writes_nothing(sqlite_db, sqlite_url, args, fragment):
    info = await at_stage_d(sqlite_db)
    clock, where = SimulatedClock(datetime.now(tz=UTC)), {"rollout_id": info.id, "release": "1.1.0"}
    noted = await anomalies.note_anomaly(sqlite_db, clock, **where, stage="D", actor="tester", text="still open")
    done = await anomalies.note_anomaly(sqlite_db, clock, **where, stage="D", actor="tester", text="seen")
    await anomalies.resolve_anomaly(sqlite_db, clock, **where, anomaly_id=done.id, actor="tester", text="fixed")
    chain = noted.id - 1  # an audit event that is no anomaly (the rollout's own)
    ids = {"NOTED": str(noted.id), "DONE": str(done.id), "CHAIN": str(chain)}
    args = [ids.get(a, a) for a in args]
    fragment = re.sub("NOTED|DONE|CHAIN", lambda m: ids[m.group(0)], fragment)
    before = (await audit.verify(sqlite_db)).head_seq

    assert_refused(canaryctl("note", *args, db=sqlite_url), fragment)

    assert (await audit.verify(sqlite_db)).head_seq == before
