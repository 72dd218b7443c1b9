"""canaryctl release add: the artifact lies under the manifest's folder, no symlink leads out of it,
and the manifest's env cannot change how the bot's loader or interpreter finds its code. Each refusal
exit 2 naming the file and field, nothing recorded."""

from __future__ import annotations

import json
import os

import pytest

from controller.config.manifest import REFUSED_ENV_NAMES, REFUSED_ENV_PREFIXES
from tests.support.canaryctl import assert_refused, canaryctl
from tests.support.checkout import EXAMPLES

CONFIG = str(EXAMPLES / "reference-bot" / "strategy.yaml")


@pytest.fixture
def ready_db(sqlite_url):
    assert canaryctl("db", "upgrade", db=sqlite_url).code == 0
    return sqlite_url


def manifest(folder, artifact: str, env: str = "") -> str:
    path = folder / "manifest.yaml"
    path.write_text(f"name: bot\ncommand: ['{{python}}', '-m', 'bot']\nartifact:\n  path: {artifact}\n{env}")
    return str(path)


def add(db, manifest_file: str):
    return canaryctl("release", "add", "1.0.0", "--manifest", manifest_file, "--config", CONFIG, db=db)


def nothing_recorded(db) -> bool:
    return canaryctl("release", "list", "--json", db=db).out == ""


@pytest.mark.parametrize("artifact", ["../../../../../../../../etc/passwd", "/etc/passwd", "../outside.bin"])
def test_an_artifact_outside_the_manifest_folder_is_refused(ready_db, tmp_path, artifact):
    (tmp_path / "outside.bin").write_bytes(b"elsewhere")
    (tmp_path / "release").mkdir()
    path = manifest(tmp_path / "release", artifact)
    assert_refused(add(ready_db, path), f"{path}: artifact.path", "outside the manifest's folder")
    assert nothing_recorded(ready_db)


def test_an_artifact_that_is_a_symlink_out_of_the_folder_is_refused(ready_db, tmp_path):
    (tmp_path / "bot.bin").symlink_to("/etc/passwd")
    path = manifest(tmp_path, "bot.bin")
    assert_refused(add(ready_db, path), f"{path}: artifact.path", "/etc/passwd", "outside the manifest's folder")
    assert nothing_recorded(ready_db)


@pytest.mark.parametrize("target", ["/etc/passwd", "/etc", "../../outside.bin"])
def test_a_symlink_inside_an_artifact_folder_leading_out_of_it_is_refused(ready_db, tmp_path, target):
    (tmp_path / "outside.bin").write_bytes(b"elsewhere")
    bot = tmp_path / "release" / "bot"
    (bot / "lib").mkdir(parents=True)
    (bot / "main.py").write_text("print('bot')\n")
    (bot / "lib" / "link").symlink_to(target)
    path = manifest(tmp_path / "release", "bot")
    assert_refused(add(ready_db, path), f"{path}: artifact.path", "lib/link", "leads out of the artifact")
    assert nothing_recorded(ready_db)


def test_a_symlink_inside_an_artifact_folder_to_a_file_of_it_is_hashed_as_that_file(ready_db, tmp_path):
    bot = tmp_path / "bot"
    bot.mkdir()
    (bot / "main.py").write_text("print('bot')\n")
    (bot / "entry.py").symlink_to("main.py")
    result = canaryctl("release", "add", "1.0.0", "--manifest", manifest(tmp_path, "bot"), "--config", CONFIG,
                       "--json", db=ready_db)
    assert result.code == 0, result.err
    assert json.loads(result.out)["manifest"]["artifact"]["path"] == str(bot)


@pytest.mark.parametrize("name", ["LD_PRELOAD", "LD_LIBRARY_PATH", "PATH", "PYTHONPATH", "PYTHONHOME",
                                  "PYTHONSTARTUP"])
def test_an_env_that_changes_how_code_is_found_is_refused(ready_db, tmp_path, name):
    (tmp_path / "bot.py").write_text("print('bot')\n")
    path = manifest(tmp_path, "bot.py", env=f"env:\n  {name}: /tmp/evil\n")
    assert_refused(add(ready_db, path), f"{path}:", f"env.{name}", "loader or interpreter")
    assert nothing_recorded(ready_db)


def test_the_refused_env_names_are_stated():
    assert {"PATH", "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP"} <= REFUSED_ENV_NAMES
    assert "LD_" in REFUSED_ENV_PREFIXES


def test_an_ordinary_env_is_kept(ready_db, tmp_path):
    (tmp_path / "bot.py").write_text("print('bot')\n")
    path = manifest(tmp_path, "bot.py", env="env:\n  BOT_MODE: paper\n  PYTHONUNBUFFERED: '1'\n")
    result = canaryctl("release", "add", "1.0.0", "--manifest", path, "--config", CONFIG, "--json", db=ready_db)
    assert result.code == 0, result.err
    assert json.loads(result.out)["manifest"]["env"] == {"BOT_MODE": "paper", "PYTHONUNBUFFERED": "1"}


def test_a_device_given_as_the_artifact_is_refused(ready_db, tmp_path):
    fifo = tmp_path / "bot.fifo"
    os.mkfifo(fifo)
    path = manifest(tmp_path, "bot.fifo")
    assert_refused(add(ready_db, path), f"{path}: artifact.path", "not a regular file or folder")
    assert nothing_recorded(ready_db)


def test_an_artifact_under_a_root_the_daemon_config_allows_is_recorded(ready_db, tmp_path):
    builds = tmp_path / "builds"
    builds.mkdir()
    (builds / "bot.bin").write_bytes(b"the build")
    (tmp_path / "release").mkdir()
    path = manifest(tmp_path / "release", str(builds / "bot.bin"))
    assert_refused(add(ready_db, path), f"{path}: artifact.path", "outside the manifest's folder")

    config = tmp_path / "controller.yaml"
    config.write_text(f"environments:\n  sim:\n    kind: sim\nartifact_roots: [{builds}]\n")
    result = canaryctl("--config", str(config), "release", "add", "1.0.0", "--manifest", path, "--config", CONFIG,
                       "--json", db=ready_db)
    assert result.code == 0, result.err
    assert json.loads(result.out)["manifest"]["artifact"]["path"] == str(builds / "bot.bin")


def test_an_artifact_root_must_be_absolute(ready_db, tmp_path):
    (tmp_path / "release").mkdir()
    config = tmp_path / "controller.yaml"
    config.write_text("environments:\n  sim:\n    kind: sim\nartifact_roots: [builds]\n")
    result = canaryctl("--config", str(config), "release", "add", "1.0.0", "--manifest",
                       manifest(tmp_path / "release", "bot.bin"), "--config", CONFIG, db=ready_db)
    assert_refused(result, f"{config}:4: artifact_roots", "expected absolute paths")
    assert nothing_recorded(ready_db)
