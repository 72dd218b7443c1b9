"""Hostile YAML through real `canaryctl` processes: each refused with exit 2, its file and line, no
traceback, in bounded time (the call's timeout), and nothing written."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.yaml_bombs import alias_bomb
from tests.support.canaryctl import assert_refused, canaryctl

BOMB = "environments: {}\n" + alias_bomb(9)  # 9**9 nodes: hundreds of millions once expanded


@pytest.mark.parametrize("surface", ["--config", "policy check", "rollout start --pipeline"])
def test_an_alias_bomb_is_refused_at_its_line_on_every_surface(tmp_path, surface):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(BOMB)
    db = f"sqlite:///{tmp_path / 'canary.db'}"
    args = {"--config": ["--config", str(bomb), "db", "upgrade"],
            "policy check": ["policy", "check", str(bomb)],
            "rollout start --pipeline": ["rollout", "start", "1.0.0", "--pipeline", str(bomb)]}[surface]
    result = canaryctl(*args, db=db, timeout=30)
    assert_refused(result, f"{bomb}:", "aliases expand past")
    assert not (tmp_path / "canary.db").exists() or surface == "rollout start --pipeline"


def test_a_device_or_a_fifo_given_as_a_config_file_is_refused_at_once(tmp_path):
    fifo = tmp_path / "controller.fifo"
    os.mkfifo(fifo)
    for path in (Path("/dev/zero"), fifo):
        result = canaryctl("--config", str(path), "db", "upgrade", db=f"sqlite:///{tmp_path / 'x.db'}", timeout=30)
        assert_refused(result, str(path), "not a regular file")


@pytest.mark.parametrize("command", [["status"], ["db", "upgrade"], ["audit", "verify"]])
def test_a_file_that_is_not_a_database_is_named_without_a_traceback(tmp_path, command):
    damaged = tmp_path / "canary.db"
    damaged.write_bytes(b"SQLite format 3\x00" + bytes(range(256)) * 20)
    result = canaryctl(*command, db=f"sqlite:///{damaged}", timeout=30)
    assert result.code != 0 and "Traceback" not in result.err + result.out, result
    assert "file is not a database" in result.err and str(damaged) in result.err, result.err
