"""canaryctl release / config: recording is idempotent, immutable, validated and audited."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.canaryctl import assert_refused, canaryctl
from tests.support.checkout import EXAMPLES

MANIFEST = str(EXAMPLES / "reference-bot" / "manifest.yaml")
CONFIG = str(EXAMPLES / "reference-bot" / "strategy.yaml")
CONFIG_NEXT = str(EXAMPLES / "reference-bot" / "strategy-next.yaml")


@pytest.fixture
def ready_db(sqlite_url):
    assert canaryctl("db", "upgrade", db=sqlite_url).code == 0
    return sqlite_url


def _audit_kinds(db):
    result = canaryctl("audit", "query", "--json", db=db)
    return [json.loads(line)["kind"] for line in result.out.splitlines()]


def test_release_add_records_the_release_and_snapshot_and_audits_both(ready_db):
    result = canaryctl("release", "add", "1.0.0", "--manifest", MANIFEST, "--config", CONFIG,
                       "--notes", "baseline", "--json", db=ready_db)
    assert result.code == 0, result.err
    recorded = json.loads(result.out)
    assert recorded["created"] is True and recorded["version"] == "1.0.0"
    assert recorded["created_by"] == "tester" and len(recorded["artifact_sha256"]) == 64
    assert _audit_kinds(ready_db) == ["config.snapshot", "release.added"]
    listed = [json.loads(line) for line in canaryctl("release", "list", "--json", db=ready_db).out.splitlines()]
    assert [r["version"] for r in listed] == ["1.0.0"]
    assert listed[0]["config_sha256"] == recorded["config_sha256"]


def test_adding_the_same_release_with_identical_content_is_a_no_op(ready_db):
    args = ("release", "add", "1.0.0", "--manifest", MANIFEST, "--config", CONFIG)
    assert canaryctl(*args, db=ready_db).code == 0
    again = canaryctl(*args, "--json", db=ready_db)
    assert again.code == 0 and json.loads(again.out)["created"] is False
    assert _audit_kinds(ready_db) == ["config.snapshot", "release.added"]


def test_adding_the_same_version_with_other_content_is_refused_and_writes_nothing(ready_db):
    assert canaryctl("release", "add", "1.0.0", "--manifest", MANIFEST, "--config", CONFIG, db=ready_db).code == 0
    refused = canaryctl("release", "add", "1.0.0", "--manifest", MANIFEST, "--config", CONFIG_NEXT, db=ready_db)
    assert_refused(refused, "1.0.0", "different config", "new version")
    assert _audit_kinds(ready_db) == ["config.snapshot", "release.added"]


def test_two_releases_with_one_config_share_one_snapshot(ready_db):
    for version in ("1.0.0", "1.0.1"):
        assert canaryctl("release", "add", version, "--manifest", MANIFEST, "--config", CONFIG, db=ready_db).code == 0
    assert _audit_kinds(ready_db) == ["config.snapshot", "release.added", "release.added"]


def test_a_bad_config_file_is_refused_with_file_line_and_field_and_nothing_is_written(ready_db, tmp_path):
    bad = tmp_path / "strategy.yaml"
    lines = open(CONFIG).read().splitlines()
    line = next(n for n, text in enumerate(lines, 1) if "BTCUSDT: {leverage: 5" in text)
    lines[line - 1] = lines[line - 1].replace("leverage: 5", "leverage: 500")
    bad.write_text("\n".join(lines))
    refused = canaryctl("release", "add", "2.0.0", "--manifest", MANIFEST, "--config", str(bad), db=ready_db)
    assert_refused(refused, f"{bad}:{line}: symbols.BTCUSDT.leverage: expected an integer from 1 to 125, got 500")
    assert canaryctl("release", "list", "--json", db=ready_db).out == ""
    assert _audit_kinds(ready_db) == []


def test_an_artifact_whose_digest_differs_from_the_manifest_is_refused(ready_db, tmp_path):
    (tmp_path / "bot.bin").write_bytes(b"the real bot")
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text("name: bot\ncommand: [./bot.bin]\nartifact:\n  path: bot.bin\n  sha256: '" + "ab" * 32 + "'\n")
    refused = canaryctl("release", "add", "3.0.0", "--manifest", str(manifest), "--config", CONFIG, db=ready_db)
    assert_refused(refused, str(manifest), "artifact.sha256", "not the one the manifest describes")


def test_an_invalid_version_is_refused(ready_db):
    refused = canaryctl("release", "add", "../etc", "--manifest", MANIFEST, "--config", CONFIG, db=ready_db)
    assert_refused(refused, "version '../etc' is invalid")


def test_config_show_prints_a_snapshot_by_release_or_hash_prefix(ready_db):
    added = json.loads(canaryctl("release", "add", "1.0.0", "--manifest", MANIFEST, "--config", CONFIG,
                                 "--json", db=ready_db).out)
    by_version = json.loads(canaryctl("config", "show", "1.0.0", "--json", db=ready_db).out)
    by_prefix = json.loads(canaryctl("config", "show", added["config_sha256"][:10], "--json", db=ready_db).out)
    assert by_version == by_prefix
    assert by_version["config"]["symbols"]["BTCUSDT"]["leverage"] == 5
    text = canaryctl("config", "show", "1.0.0", db=ready_db).out
    assert "leverage: 5" in text and added["config_sha256"] in text


def test_config_show_of_an_unknown_snapshot_says_how_to_find_one(ready_db):
    refused = canaryctl("config", "show", "9.9.9", db=ready_db)
    assert_refused(refused, "no config snapshot or release '9.9.9'")


def test_config_diff_lists_each_changed_field(ready_db):
    canaryctl("release", "add", "1.0.0", "--manifest", MANIFEST, "--config", CONFIG, db=ready_db)
    canaryctl("release", "add", "1.1.0", "--manifest", MANIFEST, "--config", CONFIG_NEXT, db=ready_db)
    changes = [json.loads(line) for line in canaryctl("config", "diff", "1.0.0", "1.1.0", "--json", db=ready_db).out.splitlines()]
    assert {c["path"]: (c["before"], c["after"]) for c in changes} == {
        "symbols.SOLUSDT.leverage": (3, 5), "sizing.order_fraction": ("0.1", "0.12")}
    human = canaryctl("config", "diff", "1.0.0", "1.1.0", db=ready_db).out
    assert "~ symbols.SOLUSDT.leverage: 3 -> 5" in human
    same = canaryctl("config", "diff", "1.0.0", "1.0.0", db=ready_db)
    assert same.code == 0 and "identical" in same.out


def test_an_edited_snapshot_row_is_refused_when_read(ready_db):
    import sqlite3

    canaryctl("release", "add", "1.0.0", "--manifest", MANIFEST, "--config", CONFIG, db=ready_db)
    conn = sqlite3.connect(ready_db.removeprefix("sqlite:///"))
    conn.execute("UPDATE config_snapshots SET content = replace(content, '\"leverage\":5', '\"leverage\":50')")
    conn.commit()
    conn.close()
    result = canaryctl("config", "show", "1.0.0", db=ready_db)
    assert result.code == 1 and "does not match its content's hash" in result.err


def test_a_release_whose_artifact_package_is_not_installed_is_refused_naming_file_and_field(ready_db, tmp_path):
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text("name: bot\ncommand: ['{python}', '-m', 'missing_bot']\nartifact:\n  package: missing_bot\n")
    refused = canaryctl("release", "add", "4.0.0", "--manifest", str(manifest), "--config", CONFIG, db=ready_db)
    assert_refused(refused, f"{manifest}: artifact.package: no Python package missing_bot is installed")
    assert canaryctl("release", "list", "--json", db=ready_db).out == ""


async def test_a_package_artifact_is_recorded_by_name_with_the_digest_of_its_folder(ready_db):
    import reference_bot
    from controller.artifact import artifact_sha256
    from controller.store.database import Database, resolve_url
    from controller.store.releases import get_release

    assert canaryctl("release", "add", "1.0.0", "--manifest", MANIFEST, "--config", CONFIG, db=ready_db).code == 0
    db = Database(resolve_url(ready_db))
    try:
        recorded = await get_release(db, "1.0.0")
    finally:
        await db.close()
    digest = artifact_sha256(Path(reference_bot.__file__).resolve().parent)
    assert recorded.manifest["artifact"] == {"package": "reference_bot", "sha256": digest}
    assert recorded.artifact_sha256 == digest
