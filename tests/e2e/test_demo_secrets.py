"""The exchange keys of a whole demo run appear nowhere an operator or an archive can read them:
not in the daemon's log lines at debug, the command's output, the database, the bots' files, the
report or its archive.

The demo's embedded simulator derives its accounts' keys from its seed, so the test knows them
without reading them from anything the run wrote.
"""

from __future__ import annotations

import gzip
import tarfile

import pytest

from controller.sim.accounts import AccountBook
from controller.sim.embed import SEED, SIM_ACCOUNTS
from tests.support.canaryctl import canaryctl


def _secrets() -> dict[str, str]:
    found = {}
    for account in AccountBook(SIM_ACCOUNTS, seed=SEED):
        found[f"{account.name} api key"] = account.api_key
        found[f"{account.name} api secret"] = account.api_secret
        found[f"{account.name} api secret (first half)"] = account.api_secret[:len(account.api_secret) // 2]
    return found


def _leaks(where: str, data: bytes, secrets: dict[str, str]) -> list[str]:
    return [f"{name} in {where}" for name, value in secrets.items() if value.encode() in data]


@pytest.mark.slow
def test_no_key_or_secret_of_the_demo_is_written_anywhere(tmp_path, demo_run):
    secrets = _secrets()
    assert all(len(value) >= 16 for value in secrets.values())
    demo, workdir = demo_run.result, demo_run.workdir  # the run at debug level
    assert demo.code == 0, (demo.out[-3000:], demo.err[-3000:])
    assert "daemon_ready" in demo.err and "debug" in demo.err  # the debug log is there to be read
    db = f"sqlite:///{workdir / 'canary.db'}"
    state = ["--state-dir", str(workdir / "state")]
    markdown = canaryctl("report", "render", "2", *state, db=db)
    as_json = canaryctl("report", "render", "2", "--format", "json", *state, db=db)
    archive = tmp_path / "rollout-2.tar.gz"
    archived = canaryctl("report", "render", "2", "--archive", str(archive), *state, db=db)
    audit = canaryctl("audit", "query", "--json", db=db)
    for result in (markdown, as_json, archived, audit):
        assert result.code == 0, result

    leaks = _leaks("the demo's output", (demo.out + demo.err).encode(), secrets)
    for name, result in {"the report": markdown, "the JSON report": as_json, "the audit query": audit}.items():
        leaks += _leaks(name, (result.out + result.err).encode(), secrets)
    files = [path for path in workdir.rglob("*") if path.is_file()]
    assert any(path.name == "canary.db" for path in files) and any(path.name == "output.log" for path in files)
    for path in files:
        leaks += _leaks(str(path.relative_to(workdir.parent)), path.read_bytes(), secrets)
    leaks += _leaks("the archive (compressed)", archive.read_bytes(), secrets)
    leaks += _leaks("the archive", gzip.decompress(archive.read_bytes()), secrets)
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if m.isfile()]
        assert members
        for member in members:
            leaks += _leaks(f"archive member {member.name}", tar.extractfile(member).read(), secrets)
    assert leaks == []
