"""The worst inputs of each surface through real `canaryctl` processes under a 1 GiB memory limit:
each exits 2 with a message naming what was refused, printing no control character raw, with no
traceback, within the call's timeout, and the store's bytes are the same afterwards."""

from __future__ import annotations

import gzip
import hashlib
import os
from pathlib import Path

import pytest

from tests.support.yaml_bombs import alias_bomb
from tests.support.canaryctl import Result, assert_refused, canaryctl
from tests.support.checkout import EXAMPLES

MEMORY = 1 << 30
"""The data segment each `canaryctl` may use: an unbounded read or expansion fails within it."""
TIMEOUT = 60
"""Seconds a refusal may take on a loaded machine; past it the call fails the test (bounded time)."""
MANIFEST = EXAMPLES / "reference-bot" / "manifest.yaml"
STRATEGY = EXAMPLES / "reference-bot" / "strategy.yaml"
DAEMON_CONFIG = EXAMPLES / "controller.yaml"

HOSTILE_FILES: dict[str, bytes] = {
    "alias bomb": (b"name: x\n" + alias_bomb(9).encode()),  # 9**9 nodes once expanded
    "deep nesting": b"name: " + b"[" * 100_000 + b"\n",
    "oversized": b"name: x\nnotes: '" + b"x" * (2 << 20) + b"'\n",
    "not UTF-8": b"name: \xff\xfe\x00\x80 \x1b[2J\x07\n",
    "control characters": b"name: \"\\e[2J\\a\"\nstages: \x1b[31m\n",
    "a key that draws": b"\"\\e]0;pwned\\a\\e[2K\\rverified\": 1\n",
}
"""Each refused by the YAML loader before anything is built from it."""


@pytest.fixture
def store(tmp_path):
    """A database at the current schema: its URL, and a function giving the hash of its bytes."""
    path = tmp_path / "canary.db"
    url = f"sqlite:///{path}"
    assert canaryctl("db", "upgrade", db=url, timeout=TIMEOUT).code == 0

    def digest() -> str:
        # The write-ahead log too: a write not yet checkpointed lives there.
        files = [path, path.with_name(path.name + "-wal")]
        return hashlib.sha256(b"".join(f.read_bytes() for f in files if f.exists())).hexdigest()

    return url, digest


def refused(store, *args: str) -> Result:
    url, digest = store
    before = digest()
    result = canaryctl(*args, db=url, timeout=TIMEOUT, memory=MEMORY)
    assert_refused(result)
    drawn = [ch for ch in result.err if not ch.isprintable() and ch != "\n"]
    assert not drawn, f"the refusal prints {drawn!r} raw: the input could draw on the terminal"
    assert digest() == before, "a refused command wrote to the store"
    return result


SURFACES = {
    "release add --manifest": lambda bad: ["release", "add", "9.9.9", "--manifest", bad, "--config", str(STRATEGY)],
    "release add --config": lambda bad: ["release", "add", "9.9.9", "--manifest", str(MANIFEST), "--config", bad],
    "rollout start --pipeline": lambda bad: ["rollout", "start", "9.9.9", "--pipeline", bad],
    "--config run": lambda bad: ["--config", bad, "run"],
    "policy check": lambda bad: ["policy", "check", bad],
}


@pytest.mark.parametrize("kind", HOSTILE_FILES)
@pytest.mark.parametrize("surface", SURFACES)
def test_a_hostile_yaml_file_is_refused_naming_it_on_every_surface(tmp_path, store, surface, kind):
    bad = tmp_path / "hostile.yaml"
    bad.write_bytes(HOSTILE_FILES[kind])
    result = refused(store, *SURFACES[surface](str(bad)))
    assert str(bad) in result.err, result.err


@pytest.mark.parametrize("surface", SURFACES)
def test_a_device_given_for_a_file_is_refused_at_once_on_every_surface(store, surface):
    result = refused(store, *SURFACES[surface]("/dev/zero"))
    assert "not a regular file" in result.err, result.err


def test_numbers_out_of_range_in_a_strategy_or_a_pipeline_are_refused_at_their_line(tmp_path, store):
    strategy = tmp_path / "strategy.yaml"
    strategy.write_text(STRATEGY.read_text().replace("allocation: 0.", "allocation: 1.0e-999999999999999999 #"))
    result = refused(store, "release", "add", "9.9.9", "--manifest", str(MANIFEST), "--config", str(strategy))
    assert f"{strategy}:" in result.err and "allocation" in result.err, result.err
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text("name: p\nstages:\n  - {name: A, environment: sim, account: master, duration: 1e999999999h,"
                        " policies: stage-a.yaml, capital_cap: .nan}\n")
    result = refused(store, "rollout", "start", "9.9.9", "--pipeline", str(pipeline))
    assert f"{pipeline}:" in result.err, result.err


ARCHIVES: dict[str, bytes] = {
    "empty": b"",
    "random bytes": bytes(range(256)) * 64,
    "truncated gzip": gzip.compress(hashlib.shake_256(b"noise").digest(1 << 16))[:20_000],
    "a gzip of no tar": gzip.compress(b"report.json\n" * 10_000),
}


@pytest.mark.parametrize("kind", ARCHIVES)
def test_an_archive_that_is_not_one_is_refused_by_report_verify(tmp_path, store, kind):
    archive = tmp_path / "report.tar.gz"
    archive.write_bytes(ARCHIVES[kind])
    result = refused(store, "report", "verify", str(archive))
    assert str(archive) in result.err, result.err


@pytest.mark.parametrize(("args", "fragment"), [
    (["audit", "query", "--since", "99999999999d"], "--since"),
    (["audit", "query", "--until", "1e308d"], "--until"),
    (["audit", "query", "--since", "\x1b[2J" + "9" * 5000], "--since"),
    (["signoff", "9.9.9", "C", "--by", "alice", "--expires-in", "99999999999999999d"], "--expires-in"),
    (["baseline", "9.9.9", "--expires-in", "-5s"], "--expires-in"),
    (["signoff", "9.9.9", "C", "--by", "alice", "--wait", "nan"], "--wait"),
    (["promote", "9.9.9", "--wait", "inf"], "--wait"),
    (["status", "--interval", "nan"], "--interval"),
    (["--config", str(DAEMON_CONFIG), "run", "--speed", "nan"], "--speed"),
    (["--config", str(DAEMON_CONFIG), "run", "--speed", "inf"], "--speed"),
    (["demo", "--speed", "nan"], "--speed"),
    (["audit", "query", "--limit", "0"], "--limit"),
], ids=lambda value: value if isinstance(value, str) else " ".join(value)[:40])
def test_a_hostile_argument_is_refused_naming_its_option(store, args, fragment):
    result = refused(store, *args)
    assert fragment in result.err, result.err


def test_the_store_fixture_would_see_a_write(store):
    """The check the tests above rely on: a command that writes changes the hash."""
    url, digest = store
    before = digest()
    added = canaryctl("release", "add", "9.9.9", "--manifest", str(MANIFEST), "--config", str(STRATEGY), db=url,
                      timeout=TIMEOUT, memory=MEMORY)
    assert added.code == 0, added
    assert digest() != before
    assert os.path.getsize(Path(url.removeprefix("sqlite:///"))) > 0
