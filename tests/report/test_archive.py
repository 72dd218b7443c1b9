"""The archive on hand-built evidence: deterministic, written whole or not at all, credentials kept out,
and every kind of tampering named by verify."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from dataclasses import replace

import pytest

from controller.report import archive
from controller.report.archive import ArchiveExists, ArchiveUnreadable
from controller.report.evidence import LogFile
from tests.report.builders import rolled_back

ROOT = "rollout-3-2.0.0"


@pytest.fixture
def evidence(tmp_path):
    return rolled_back(tmp_path)


@pytest.fixture
def written(tmp_path, evidence):
    target = tmp_path / "out" / "report.tar.gz"
    target.parent.mkdir()
    archive.write(target, evidence)
    return target


def read(path) -> dict[str, bytes]:
    with tarfile.open(path, "r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isreg()}


def pack(path, contents: dict[str, bytes], extra=()) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in contents.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info in extra:
            tar.addfile(info)


def problems(path) -> dict[str, str]:
    result = archive.verify(path)
    return {p.member: p.how for p in result.problems}


def with_sum(contents: dict[str, bytes], member: str, data: bytes) -> dict[str, bytes]:
    """``member`` replaced by ``data``, and its line in the manifest fixed to match."""
    manifest = contents[f"{ROOT}/MANIFEST.sha256"].decode().splitlines()
    fixed = [f"{hashlib.sha256(data).hexdigest()}  {member}" if line.endswith(f"  {member}") else line
             for line in manifest]
    return {**contents, f"{ROOT}/{member}": data, f"{ROOT}/MANIFEST.sha256": ("\n".join(fixed) + "\n").encode()}


def test_an_archive_lists_every_member_with_its_sum_and_verifies(written):
    result = archive.verify(written)
    assert result.ok and result.root == ROOT and result.audit_events == 5
    contents = read(written)
    manifest = contents[f"{ROOT}/MANIFEST.sha256"].decode().splitlines()
    listed = {line.split("  ", 1)[1]: line.split("  ", 1)[0] for line in manifest}
    assert set(listed) == {n.removeprefix(f"{ROOT}/") for n in contents} - {"MANIFEST.sha256"}
    assert all(hashlib.sha256(contents[f"{ROOT}/{n}"]).hexdigest() == sha for n, sha in listed.items())
    assert {"plots/latency.svg", "plots/buckets.svg", "logs/sim-canary/output.log"} <= set(listed)
    assert "plots/leverage.svg" not in listed


def test_members_are_sorted_with_a_fixed_owner_mode_and_time(written, evidence):
    with tarfile.open(written, "r:gz") as tar:
        infos = tar.getmembers()
    assert [i.name for i in infos] == sorted(i.name for i in infos)
    assert {(i.uid, i.gid, i.uname, i.gname, i.mode, i.mtime) for i in infos} == \
           {(0, 0, "", "", 0o644, int(evidence.as_of.timestamp()))}


def test_the_same_evidence_gives_the_same_bytes(tmp_path, evidence, written):
    again = tmp_path / "again.tar.gz"
    archive.write(again, evidence)
    assert again.read_bytes() == written.read_bytes()


def test_an_existing_file_is_kept_unless_forced(tmp_path, evidence, written):
    before = written.read_bytes()
    with pytest.raises(ArchiveExists, match="--force"):
        archive.write(written, rolled_back(tmp_path, policies={}))
    assert written.read_bytes() == before
    archive.write(written, rolled_back(tmp_path, policies={}), force=True)
    assert written.read_bytes() != before and archive.verify(written).ok
    assert os.listdir(written.parent) == ["report.tar.gz"]


def test_a_credentials_file_is_refused_and_nothing_is_left_behind(tmp_path, evidence):
    credentials = tmp_path / "state" / "instances" / "sim-canary" / "exchange.json"
    credentials.write_text('{"api_key": "k", "api_secret": "s3cr3t"}')
    credentials.chmod(0o600)
    leaking = replace(evidence, logs=(LogFile("sim-canary", credentials, credentials.stat().st_size),))
    target = tmp_path / "leak.tar.gz"
    with pytest.raises(RuntimeError, match="refusing to archive .*exchange.json"):
        archive.write(target, leaking)
    assert not target.exists() and not list(tmp_path.glob("*.part"))


def test_an_error_while_writing_leaves_no_half_written_file(tmp_path, evidence):
    log = evidence.logs[0]
    shrinking = replace(evidence, logs=(replace(log, size=log.size + 1000),))  # the file is shorter than that
    target = tmp_path / "half.tar.gz"
    with pytest.raises(OSError, match="shrank"):
        archive.write(target, shrinking)
    assert not target.exists() and not list(tmp_path.glob(".half.tar.gz.*"))


def test_an_edited_config_snapshot_with_its_sum_fixed_is_caught_by_its_name(tmp_path, written):
    contents = read(written)
    config = next(n for n in contents if "/configs/" in n).removeprefix(f"{ROOT}/")
    pack(tmp_path / "t.tar.gz", with_sum(contents, config, b'{"symbols":{"SOLUSDT":{"leverage":10}}}'))
    assert problems(tmp_path / "t.tar.gz") == {config: "its content does not match the SHA-256 in its name "
                                                       "(the snapshot was edited)"}


def test_a_truncated_audit_excerpt_with_its_sum_fixed_disagrees_with_the_report(tmp_path, written):
    contents = read(written)
    shorter = b"".join(contents[f"{ROOT}/audit/excerpt.jsonl"].splitlines(keepends=True)[:-1])
    pack(tmp_path / "t.tar.gz", with_sum(contents, "audit/excerpt.jsonl", shorter))
    found = problems(tmp_path / "t.tar.gz")
    assert list(found) == ["audit/excerpt.jsonl"] and "but the report names" in found["audit/excerpt.jsonl"]


def test_reordered_audit_events_break_the_chain(tmp_path, written):
    contents = read(written)
    lines = contents[f"{ROOT}/audit/excerpt.jsonl"].splitlines(keepends=True)
    lines[1], lines[2] = lines[2], lines[1]
    pack(tmp_path / "t.tar.gz", with_sum(contents, "audit/excerpt.jsonl", b"".join(lines)))
    seq = json.loads(lines[1])["seq"]
    assert problems(tmp_path / "t.tar.gz")["audit/excerpt.jsonl"] == \
        f"hash chain broken at seq {seq}, which follows seq {seq - 2}: events are missing or reordered"


def test_members_outside_the_folder_links_and_duplicates_are_named(tmp_path, written):
    contents = read(written)
    link = tarfile.TarInfo(f"{ROOT}/logs/shadow")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    pack(tmp_path / "t.tar.gz", {**contents, "elsewhere.txt": b"x"}, extra=[link])
    found = problems(tmp_path / "t.tar.gz")
    assert found["elsewhere.txt"] == f"outside the archive's folder {ROOT}/ (added)"
    assert found[f"{ROOT}/logs/shadow"] == "is not a regular file (added)"


def test_an_archive_without_a_manifest_is_tampered(tmp_path, written):
    contents = {n: d for n, d in read(written).items() if not n.endswith("MANIFEST.sha256")}
    pack(tmp_path / "t.tar.gz", contents)
    assert problems(tmp_path / "t.tar.gz") == {"MANIFEST.sha256": "missing: the archive has no manifest"}


def test_what_is_no_tar_gz_is_unreadable(tmp_path):
    (tmp_path / "plain.txt").write_text("hello")
    with pytest.raises(ArchiveUnreadable, match="is not a readable tar.gz archive"):
        archive.verify(tmp_path / "plain.txt")
    with pytest.raises(ArchiveUnreadable, match="no such file"):
        archive.verify(tmp_path / "absent.tar.gz")


# ---------------------------------------------------------------- the report's completion section

def completion(evidence, check=None) -> dict:
    from controller.report import document

    return document.build(evidence, archived=False, archive_check=check)["completion"]


def test_completion_says_an_archive_exists_and_verifies(tmp_path, evidence, written):
    check = archive.check_of(written, 3, "2.0.0")
    assert (check["exists"], check["verifies"], check["problems"]) == (True, True, [])
    done = completion(evidence, check)
    assert done["archive"]["verifies"] is True
    line = next(x for x in document_of(evidence, check)["checklist"] if x["key"] == "done-2")
    assert line["status"] == "met" and str(written) in line["evidence"][0]


def test_completion_says_a_tampered_missing_or_foreign_archive_does_not_verify(tmp_path, evidence, written):
    contents = read(written)
    pack(tmp_path / "tampered.tar.gz", {**contents, f"{ROOT}/report.md": b"# all fine\n"})
    tampered = archive.check_of(tmp_path / "tampered.tar.gz", 3, "2.0.0")
    assert not tampered["verifies"] and any("report.md" in p for p in tampered["problems"])
    missing = archive.check_of(tmp_path / "nowhere.tar.gz", 3, "2.0.0")
    assert (missing["exists"], missing["verifies"]) == (False, False)
    foreign = archive.check_of(written, 4, "2.0.0")
    assert not foreign["verifies"] and "not of rollout-4-2.0.0" in foreign["problems"][-1]
    line = next(x for x in document_of(evidence, tampered)["checklist"] if x["key"] == "done-2")
    assert line["status"] == "open" and "does not verify" in line["evidence"][0]


def test_completion_says_which_stage_lacks_a_signoff_and_that_no_archive_was_named(evidence):
    done = completion(evidence)
    assert done["archive"]["exists"] is None and "--check-archive FILE" in done["archive"]["note"]
    # The rolled-back canary's owner never signed its review.
    assert done["stages"] == [{"stage": "C", "required": 1, "signed": [], "missing": ["owner-review"]}]
    assert done["signed_off"] is False


def test_the_markdown_has_the_completion_section(evidence, written):
    from controller.report import markdown

    text = markdown.render(document_of(evidence, archive.check_of(written, 3, "2.0.0")), plots_linked=False)
    assert "## Completion" in text and f"- Archive `{written}`: **exists and verifies**" in text


def document_of(evidence, check) -> dict:
    from controller.report import document

    return document.build(evidence, archived=False, archive_check=check)
