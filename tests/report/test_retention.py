"""Retention: old rows are archived (a checksummed archive `report verify` accepts), then deleted in one
transaction; the audit chain verifies across the cut from its anchor; a rollout under way keeps its rows."""

from __future__ import annotations

import asyncio
import json
import tarfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from controller.clock import SimulatedClock
from controller.errors import StoreError
from controller.report import archive
from controller.report.retention import ArchiveUnwritable, PRUNE_JSON, prune
from controller.store import audit
from controller.store.database import Database, resolve_url
from controller.store.models import (AuditEvent, ConfigSnapshot, OperatorCommand, Release, Rollout, StageRun,
                                     VerdictChange)
from controller.store.schema import upgrade
from tests.support.canaryctl import assert_refused, canaryctl

DAY = 86400.0
KEEP = 90 * DAY


async def a_rollout(db, clock, state: str, *, finished: bool) -> int:
    """A rollout with a stage run, two verdict changes, an acknowledged and a pending command, and two
    audit events, all stamped on ``clock`` (which moves an hour along)."""
    async with db.write() as session:
        release = (await session.execute(select(Release))).scalars().first()
        if release is None:
            session.add(ConfigSnapshot(sha256="c" * 64, content="{}", created_at=clock.now()))
            release = Release(version="1.0.0", manifest="{}", manifest_sha256="m" * 64, artifact_sha256="a" * 64,
                              config_sha256="c" * 64, created_by="t", created_at=clock.now())
            session.add(release)
            await session.flush()
        rollout = Rollout(release_id=release.id, pipeline="{}", state=state, stage="C", created_at=clock.now(),
                          updated_at=clock.now())
        session.add(rollout)
        await session.flush()
        await audit.append(session, clock, actor="alice", kind="rollout.created", subject=f"rollout:{rollout.id}",
                           payload={"rollout": rollout.id})
        run = StageRun(rollout_id=rollout.id, stage="C", environment="sim", account="canary", capital_cap=None,
                       started_at=clock.now(), ends_at=clock.now() + timedelta(hours=1),
                       finished_at=clock.now() + timedelta(hours=1) if finished else None,
                       outcome="rolled_back" if finished else None)
        session.add(run)
        await session.flush()
        for n, verdict in enumerate(("pass", "fail")):
            session.add(VerdictChange(rollout_id=rollout.id, stage_run_id=run.id, policy="c-leverage",
                                      verdict=verdict, value=float(n), threshold="0", window_seconds=60.0, samples=3,
                                      evaluated_at=clock.now() + timedelta(minutes=n + 1), evidence="{}"))
        session.add(OperatorCommand(rollout_id=rollout.id, kind="pause", actor="alice", args="{}",
                                    created_at=clock.now(), acked_at=clock.now(), outcome="accepted"))
        session.add(OperatorCommand(rollout_id=rollout.id, kind="promote", actor="alice", args="{}",
                                    created_at=clock.now()))
        await audit.append(session, clock, actor="controller", kind="rollout.transition",
                           subject=f"rollout:{rollout.id}", payload={"to": state})
    clock.advance(3600)
    return rollout.id


async def counts(db) -> dict[str, int]:
    async with db.read() as session:
        return {model.__tablename__: (await session.execute(select(func.count()).select_from(model))).scalar_one()
                for model in (VerdictChange, StageRun, OperatorCommand, AuditEvent)}


async def history(db, clock) -> tuple[int, int, int]:
    """Rollout 1 finished 120 days ago; rollout 2 started 119 days ago and is still under way (an old
    release event after it); rollout 3 finished yesterday."""
    old = await a_rollout(db, clock, "rolled_back", finished=True)
    clock.advance(DAY)
    active = await a_rollout(db, clock, "paused", finished=False)
    async with db.write() as session:
        await audit.append(session, clock, actor="alice", kind="release.added", subject="release:1.0.0")
    clock.advance(118 * DAY)
    recent = await a_rollout(db, clock, "promoted", finished=True)
    clock.advance(DAY)
    return old, active, recent


async def test_a_prune_archives_then_deletes_old_rows_and_the_chain_verifies_from_its_anchor(db, clock, tmp_path):
    old, active, recent = await history(db, clock)
    before = await counts(db)
    target = tmp_path / "prune.tar.gz"
    seen = []
    pruned = await prune(db, clock, older_than=KEEP, target=target, progress=seen.append)

    # Rollout 1's stage run, its two verdicts and its acknowledged command; its two audit events (the
    # chain's prefix stops at rollout 2's first event: that rollout is under way).
    assert pruned.rows == {"verdicts": 2, "stage_runs": 1, "operator_commands": 1, "audit_events": 2}
    assert pruned.audit_range == (1, 2) and pruned.kept_active == (active,)
    after = await counts(db)
    assert after == {"verdicts": before["verdicts"] - 2, "stage_runs": before["stage_runs"] - 1,
                     "operator_commands": before["operator_commands"] - 1,
                     "audit_events": before["audit_events"] - 2 + 1}  # + the anchor
    async with db.read() as session:
        kept = {(r.rollout_id, r.verdict) for r in (await session.execute(select(VerdictChange))).scalars()}
        pending = (await session.execute(select(OperatorCommand).where(OperatorCommand.rollout_id == old))).scalars()
        assert [c.kind for c in pending] == ["promote"]  # never acknowledged: the daemon may still read it
        assert (await session.execute(select(func.min(AuditEvent.seq)))).scalar_one() == 3
    assert kept == {(active, "pass"), (active, "fail"), (recent, "pass"), (recent, "fail")}
    assert any(line.startswith("reading verdicts: 2/2") for line in seen)

    # The archive is the report's format: it verifies, and holds what went.
    check = archive.verify(target)
    assert check.ok, check.problems
    assert check.audit_events == 2
    with tarfile.open(target) as tar:
        root = tar.getnames()[0].split("/")[0]
        summary = json.load(tar.extractfile(f"{root}/{PRUNE_JSON}"))
        verdicts = tar.extractfile(f"{root}/rows/verdicts.jsonl").read().decode().splitlines()
        excerpt = [json.loads(line) for line in tar.extractfile(f"{root}/audit/excerpt.jsonl").read().splitlines()]
    assert summary["rows"] == pruned.rows and summary["audit"]["last_seq"] == 2
    assert [json.loads(v)["rollout_id"] for v in verdicts] == [old, old]

    # The chain: intact from the anchor, which records the range and the last archived hash.
    report = await audit.verify(db)
    assert report.ok, report.reason
    assert report.archived_through == 2 and report.anchor_seq == pruned.anchor_seq == report.head_seq
    async with db.read() as session:
        anchor = (await session.execute(select(AuditEvent).where(AuditEvent.seq == pruned.anchor_seq))).scalar_one()
    recorded = json.loads(anchor.payload)["audit"]
    assert recorded == {"first_seq": 1, "last_seq": 2, "count": 2, "last_hash": excerpt[-1]["hash"]}
    assert json.loads(anchor.payload)["archive"]["sha256"] == pruned.written.sha256

    # An anchor made to point elsewhere breaks the chain: its own hash no longer holds.
    forged = anchor.payload.replace(recorded["last_hash"], "f" * 64)
    async with db.engine.begin() as conn:
        await conn.execute(text("UPDATE audit_events SET payload = :p WHERE seq = :seq"),
                           {"p": forged, "seq": pruned.anchor_seq})
    broken = await audit.verify(db)
    assert not broken.ok and broken.first_bad_seq == 3  # the first kept event no longer follows the recorded hash


async def test_the_store_stays_writable_while_the_archive_is_written(sqlite_url, tmp_path):
    """Writing a large archive takes a while: the daemon must go on writing its verdicts meanwhile. The
    prune reads what goes, writes the archive outside any write transaction, then deletes."""
    import sqlite3

    clock = SimulatedClock(datetime.now(tz=UTC) - timedelta(days=121))
    database = Database(resolve_url(sqlite_url))
    await upgrade(database)
    await history(database, clock)
    path = sqlite_url.removeprefix("sqlite:///").removeprefix("sqlite+aiosqlite:///")
    writes: list[str] = []

    def progress(line: str) -> None:
        if line.startswith("writing "):  # the archive's file is being written
            other = sqlite3.connect(path, timeout=0.2, isolation_level=None)
            try:
                other.execute("BEGIN IMMEDIATE")  # what any writer of the daemon takes first
                other.execute("ROLLBACK")
                writes.append("written")
            except sqlite3.OperationalError as error:
                writes.append(str(error))
            finally:
                other.close()

    try:
        pruned = await prune(database, clock, older_than=KEEP, target=tmp_path / "prune.tar.gz", progress=progress)
    finally:
        await database.close()
    assert writes == ["written"]
    assert pruned.rows["verdicts"] == 2 and archive.verify(tmp_path / "prune.tar.gz").ok


async def test_two_prunes_at_once_delete_once_and_the_second_deletes_nothing(db, clock, tmp_path):
    """Two prunes at once (the nightly timer and an operator) choose the same rows: the first to commit
    deletes them; the other finds them gone and deletes nothing rather than anchor a range it did not
    remove."""
    await history(db, clock)
    outcomes = await asyncio.gather(*(prune(db, clock, older_than=KEEP, target=tmp_path / f"{name}.tar.gz")
                                      for name in ("timer", "operator")), return_exceptions=True)

    refused = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(refused) == 1 and isinstance(refused[0], StoreError), outcomes
    assert "pruned meanwhile" in str(refused[0])
    report = await audit.verify(db)
    assert report.ok, report.reason
    anchors = [e async for e in audit.query(db, audit.AuditFilter(kind=audit.PRUNED_KIND))]
    assert len(anchors) == 1



async def test_a_second_prune_chains_onto_the_first(db, clock, tmp_path):
    await history(db, clock)
    await prune(db, clock, older_than=KEEP, target=tmp_path / "first.tar.gz")
    async with db.write() as session:  # rollout 2 finishes; its rows age past the cut with everything else
        await session.execute(text("UPDATE rollouts SET state = 'rolled_back'"))
        await session.execute(text("UPDATE stage_runs SET finished_at = started_at WHERE finished_at IS NULL"))
    clock.advance(200 * DAY)
    pruned = await prune(db, clock, older_than=KEEP, target=tmp_path / "second.tar.gz")
    assert pruned.kept_active == () and pruned.audit_range[0] == 3
    report = await audit.verify(db)
    assert report.ok, report.reason
    assert report.checked == 1 and report.archived_through == report.head_seq - 1
    assert archive.verify(tmp_path / "second.tar.gz").ok


async def test_a_prefix_deleted_without_an_anchor_breaks_the_chain(db, clock):
    await history(db, clock)
    async with db.engine.begin() as conn:
        await conn.execute(text("DELETE FROM audit_events WHERE seq <= 2"))
    report = await audit.verify(db)
    assert not report.ok and report.first_bad_seq == 1 and "no prune anchor" in report.reason


async def test_a_dry_run_counts_and_changes_nothing(db, clock, tmp_path):
    await history(db, clock)
    before = await counts(db)
    pruned = await prune(db, clock, older_than=KEEP, target=None, dry_run=True)
    assert pruned.rows == {"verdicts": 2, "stage_runs": 1, "operator_commands": 1, "audit_events": 2}
    assert pruned.written is None and await counts(db) == before and not list(tmp_path.glob("*.tar.gz"))


async def test_an_unwritable_archive_deletes_nothing(db, clock, tmp_path):
    await history(db, clock)
    before = await counts(db)
    (tmp_path / "a-file").write_text("")
    # /sys refuses a new file to every user, root included (the suite may run as root, whom modes do not stop).
    for target, expected in ((tmp_path / "missing" / "p.tar.gz", "does not exist"),
                             (tmp_path / "a-file" / "p.tar.gz", "is not a folder"),
                             (Path("/sys/p.tar.gz"), "folder /sys is not writable")):
        with pytest.raises(ArchiveUnwritable, match=expected):
            await prune(db, clock, older_than=KEEP, target=target)
    (tmp_path / "taken.tar.gz").write_bytes(b"")
    with pytest.raises(ArchiveUnwritable, match="exists"):
        await prune(db, clock, older_than=KEEP, target=tmp_path / "taken.tar.gz")
    assert await counts(db) == before


# ---------------------------------------------------------------- canaryctl db prune

@pytest.fixture
async def old_store(sqlite_url):
    """The history above, ending now on the wall clock (canaryctl prunes on it)."""
    from datetime import UTC, datetime

    clock = SimulatedClock(datetime.now(tz=UTC) - timedelta(days=121))
    database = Database(resolve_url(sqlite_url))
    await upgrade(database)
    await history(database, clock)
    yield database
    await database.close()


@pytest.mark.parametrize("value, expected", [("9x", "'9x' is not a duration"), ("0d", "no time at all")])
def test_a_bad_duration_is_refused_with_exit_2(sqlite_url, value, expected):
    assert_refused(canaryctl("db", "prune", "--older-than", value, db=sqlite_url), "--older-than", expected)


async def test_canaryctl_prunes_and_audit_verify_names_the_anchor(old_store, sqlite_url, tmp_path):
    before = await counts(old_store)
    missing = canaryctl("db", "prune", "--archive", str(tmp_path / "nowhere" / "p.tar.gz"), db=sqlite_url)
    assert_refused(missing, "folder", "does not exist")
    assert await counts(old_store) == before

    dry = canaryctl("db", "prune", "--dry-run", "--json", db=sqlite_url)
    assert dry.code == 0, dry
    assert json.loads(dry.out)["total"] == 6 and await counts(old_store) == before

    target = tmp_path / "p.tar.gz"
    done = canaryctl("db", "prune", "--older-than", "90d", "--archive", str(target), db=sqlite_url)
    assert done.code == 0, done
    assert "archived 6 rows" in done.out and str(target) in done.out
    assert "rollouts under way kept whole: 2" in done.out
    verified = canaryctl("audit", "verify", db=sqlite_url)
    assert verified.code == 0, verified
    assert "events 1..2 archived by a prune" in verified.out
    assert canaryctl("report", "verify", str(target)).code == 0
    again = canaryctl("db", "prune", "--archive", str(tmp_path / "again.tar.gz"), db=sqlite_url)
    assert again.code == 0 and "nothing older than" in again.out and not (tmp_path / "again.tar.gz").exists()
