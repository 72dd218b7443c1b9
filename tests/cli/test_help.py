"""Every canaryctl command explains itself with an example, and every command that takes ROLLOUT
takes either a rollout id or a release version.

Both walk the command tree as `canaryctl` builds it (lazily loaded from `app.COMMANDS`), so a
command added later is held to the same rules without editing this file.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import click
import pytest
from click.testing import CliRunner

from controller.cli.app import cli
from controller.clock import SimulatedClock
from controller.release_files import read_release
from controller.rollout.info import create_rollout
from controller.rollout.pipeline import load_pipeline
from controller.store.database import Database, resolve_url
from controller.store.releases import add_release
from controller.store.schema import upgrade
from tests.support.canaryctl import canaryctl
from tests.support.checkout import EXAMPLES


def _walk(command: click.Command, path: tuple[str, ...] = ()):
    yield path, command
    if isinstance(command, click.Group):
        ctx = click.Context(command, info_name=path[-1] if path else "canaryctl")
        for name in command.list_commands(ctx):
            yield from _walk(command.get_command(ctx, name), (*path, name))


COMMANDS = list(_walk(cli))


def test_the_walk_finds_every_registered_command():
    top = {path[0] for path, _ in COMMANDS if path}
    assert top >= {"status", "rollout", "promote", "rollback", "audit", "db", "release"}
    assert ("rollout", "show") in {path for path, _ in COMMANDS}


@pytest.mark.parametrize("path", [path for path, _ in COMMANDS], ids=lambda p: " ".join(p) or "canaryctl")
def test_every_command_has_help_with_an_example(path):
    result = CliRunner().invoke(cli, [*path, "--help"], prog_name="canaryctl")
    assert result.exit_code == 0, result.output
    assert "Example" in result.output, f"`canaryctl {' '.join(path)} --help` shows no example:\n{result.output}"


def _takes_rollout(command: click.Command) -> bool:
    return any(isinstance(p, click.Argument) and p.name == "rollout" for p in command.params)


def _filled(path: tuple[str, ...], command: click.Command, ref: str) -> list[str]:
    """The command line with ``ref`` as ROLLOUT and a placeholder for every other required parameter."""
    args, options = [], []
    for param in command.params:
        if isinstance(param, click.Argument):
            args.append(ref if param.name == "rollout" else "C" if param.required else None)
        elif param.required:
            options += [param.opts[0], "x"]
    if any(p.name == "wait_seconds" for p in command.params):
        options += ["--wait", "0"]
    if path == ("note",):  # one of --anomaly and --resolves is required
        options += ["--anomaly", "x"]
    return [*path, *(a for a in args if a is not None), *options]


ROLLOUT_COMMANDS = [(path, command) for path, command in COMMANDS if _takes_rollout(command)]


def test_the_rollout_commands_are_found():
    assert {" ".join(path) for path, _ in ROLLOUT_COMMANDS} >= {
        "rollout show", "promote", "rollback", "pause", "resume", "signoff", "status"}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> tuple[str, int]:
    """A database with releases 1.0.0 and 1.1.0 and one pending rollout of 1.1.0 (no daemon)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('refs') / 'canary.db'}"

    async def build() -> int:
        db = Database(resolve_url(url))
        clock = SimulatedClock(datetime.now(tz=UTC))
        try:
            await upgrade(db)
            for version in ("1.0.0", "1.1.0"):
                await add_release(db, clock, read_release(version, EXAMPLES / "demo" / "manifest.yaml",
                                                          EXAMPLES / "reference-bot" / "strategy.yaml"), actor="t")
            return (await create_rollout(db, clock, version="1.1.0", pipeline=load_pipeline(),
                                                 actor="t")).id
        finally:
            await db.close()

    return url, asyncio.run(build())


@pytest.mark.parametrize("path", [path for path, _ in ROLLOUT_COMMANDS], ids=" ".join)
def test_an_unknown_rollout_is_refused_naming_both_forms(store, path):
    url, _ = store
    command = dict(ROLLOUT_COMMANDS)[path]
    result = canaryctl(*_filled(path, command, "9.9.9"), db=url)
    assert result.code == 2, result
    assert "no rollout '9.9.9'" in result.err and "rollout id or a release version" in result.err, result.err


QUEUED = 3  # rollouts.NOT_ACKED: the command is written; no daemon answered within --wait 0


@pytest.mark.parametrize("ref", ["id", "version"])
@pytest.mark.parametrize("path", [("promote",), ("rollback",), ("pause",), ("resume",), ("signoff",)], ids=" ".join)
def test_commands_to_the_daemon_accept_an_id_or_a_version(store, path, ref):
    url, rollout_id = store
    command = dict(ROLLOUT_COMMANDS)[path]
    result = canaryctl(*_filled(path, command, str(rollout_id) if ref == "id" else "1.1.0"), "--json", db=url)
    assert result.code == QUEUED, result
    assert json.loads(result.out)["rollout"] == rollout_id


@pytest.mark.parametrize("ref", ["id", "version"])
@pytest.mark.parametrize("path", [("rollout", "show"), ("status",)], ids=" ".join)
def test_reading_commands_accept_an_id_or_a_version(store, path, ref):
    url, rollout_id = store
    result = canaryctl(*path, str(rollout_id) if ref == "id" else "1.1.0", "--json", db=url)
    assert result.code == 0, result
    shown = json.loads(result.out)
    assert (shown["rollouts"][0] if "rollouts" in shown else shown)["id"] == rollout_id


def test_a_since_beyond_any_date_is_refused_with_a_clear_message(tmp_path):
    from tests.support.canaryctl import assert_refused

    result = canaryctl("audit", "query", "--since", "99999999999d", db=f"sqlite:///{tmp_path / 'c.db'}")
    assert_refused(result, "--since")
