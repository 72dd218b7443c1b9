"""canaryctl run (the daemon) and canaryctl demo (the whole story on the embedded default)."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import click

from controller.cli.numbers import FiniteFloatRange
from controller.errors import ConfigError


@click.command("run")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), envvar="STATE_DIRECTORY",
              show_envvar=True, help="Where placed releases keep their files (default: next to the database, "
                                      "or systemd's StateDirectory).")
@click.option("--speed", type=FiniteFloatRange(min=0, min_open=True), default=None,
              help="Run the clock this many times faster than real time (simulator environments only).")
@click.option("--seed", type=int, default=7, show_default=True, help="Seed of the embedded simulator.")
def run_daemon(state_dir: Path | None, speed: float | None, seed: int) -> None:
    """Run the controller: verify, promote and roll back releases until SIGTERM.

    Needs --config (or $CANARY_CONFIG). SIGHUP reloads the policies (validated first).

    Example: canaryctl --config /etc/canary-controller/controller.yaml run
    """
    import asyncio
    from datetime import UTC, datetime

    from controller import logs
    from controller.cli.context import database_url, default_state_dir, settings
    from controller.clock import RealClock, SimulatedClock
    from controller.config.daemon import load_daemon_config
    from controller.daemon.service import Daemon, DaemonOptions
    from controller.store.database import Database
    from controller.store.schema import require_current

    opts = settings()
    if opts.config_path is None:
        raise click.UsageError("canaryctl run needs the daemon's config: --config FILE or $CANARY_CONFIG")
    config = load_daemon_config(opts.config_path)
    if speed and any(e.kind != "sim" for e in config.environments.values()):
        raise ConfigError("--speed only applies when every environment is the simulator", file=str(opts.config_path))
    logs.configure(config.log.level, config.log.format)
    url = database_url()
    folder = state_dir or default_state_dir(url)
    clock = SimulatedClock(datetime.now(tz=UTC), speed=speed) if speed else RealClock()
    simulators = None
    if any(e.kind == "sim" for e in config.environments.values()):
        from controller.sim.embed import EmbeddedSimulators

        simulators = EmbeddedSimulators(clock, seed=seed, speed=speed)

    async def main() -> int:
        db = Database(url)
        try:
            await require_current(db)
            return await Daemon(config, db, clock, DaemonOptions(state_dir=folder), simulators=simulators).run()
        finally:
            await db.close()

    sys.exit(asyncio.run(main()))


@click.command("demo")
@click.option("--json", "as_json", is_flag=True, help="End with one JSON object summarising the rollouts.")
@click.option("--speed", type=FiniteFloatRange(min=1), default=10.0, show_default=True,
              help="How many times faster than real time the clock runs.")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path),
              help="Where the database and the bots' files go (default: a new temporary folder).")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="error",
              show_default=True, help="The daemon's log lines on standard error, from this level up.")
def demo(as_json: bool, speed: float, workdir: Path | None, log_level: str) -> None:
    """Run the canary story on the simulator: a healthy release promoted, a defective one rolled back.

    Starts the simulator, the daemon on a fresh SQLite file and the reference bot; places a
    baseline on the master account; takes a healthy release through the canary stage; catches
    a release with a wrong leverage and rolls it back. About a minute of wall time.

    Example: canaryctl demo --json | tail -1 | jq .rollouts
    """
    import asyncio

    from controller import logs
    from controller.demo import DemoOptions, run_demo
    from controller.sim.embed import EmbeddedSimulators

    logs.configure(log_level)
    folder = workdir or Path(tempfile.mkdtemp(prefix="canary-demo-"))
    folder.mkdir(parents=True, exist_ok=True)
    result = asyncio.run(run_demo(DemoOptions(workdir=folder, speed=speed), lambda line: click.echo(line),
                                  simulators=lambda clock: EmbeddedSimulators(clock, speed=speed)))
    if as_json:
        click.echo(json.dumps(result))
    else:
        for r in result["rollouts"]:
            extra = f" by {r['policy']} (detected in {r['detect_ms']} ms, account safe in {r['safe_ms']} ms, rolled back in {r['rollback_ms']} ms)" \
                if r["outcome"] == "rolled_back" else ""
            click.echo(f"{r['release']}: {r['outcome']}{extra}")
        click.echo(f"audit chain {'intact' if result['audit_chain_ok'] else 'BROKEN'}; database {result['db']}")
    if not result["audit_chain_ok"]:
        sys.exit(1)


@click.command("supervise", context_settings={"ignore_unknown_options": True})
@click.option("--placement", "instance", required=True, metavar="INSTANCE",
              help="The instance (one account) whose placement lease the bot runs under.")
@click.option("--lease-seconds", type=FiniteFloatRange(min=0, min_open=True), default=None,
              help="The lease's length (default: the daemon config's lease_seconds, else 9).")
@click.option("--grace", type=FiniteFloatRange(min=0), default=None,
              help="Seconds between SIGTERM and SIGKILL when the bot is killed (default and at most: a "
                   "third of the lease).")
@click.option("--pass-fd", "pass_fds", type=click.IntRange(min=3), multiple=True,
              help="A descriptor the bot inherits (the process deployer's instance lock).")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def supervise(instance: str, lease_seconds: float | None, grace: float | None, pass_fds: tuple[int, ...],
              command: tuple[str, ...]) -> None:
    """Run a bot under its placement's lease: the dead man's switch the deployer starts it with.

    Claims the instance's placement lease, starts COMMAND as its child and renews the lease every
    third of its length; kills the bot when another placement or a stop (from any host) superseded
    it, or when the lease could not be renewed within its length (the database out of reach).
    The database comes from $CANARY_DB or the daemon config, never from the arguments.

    Exit status: the bot's own when it ends by itself; 0 when stopped (SIGTERM); 10 superseded;
    11 not renewed in time; 12 the lease could not be claimed (no bot started); 127 COMMAND cannot be
    run; 2 bad usage.

    Example: canaryctl supervise --placement sim-canary -- python -m reference_bot --config c.yaml
    """
    import asyncio

    from controller import logs
    from controller.cli.context import database_url, settings
    from controller.deploy.base import DeployError, check_instance
    from controller.deploy.supervisor import Supervisor
    from controller.store.database import Database

    try:
        check_instance(instance)
    except DeployError as error:
        raise click.BadParameter(str(error), param_hint="--placement") from None
    opts = settings()
    config = None
    if opts.config_path is not None:
        from controller.config.daemon import load_daemon_config

        config = load_daemon_config(opts.config_path)
    logs.configure(config.log.level if config else "info", config.log.format if config else "console")
    seconds = lease_seconds or (float(config.lease_seconds) if config else 9.0)
    url = database_url()

    async def main() -> int:
        db = Database(url)
        try:
            return await Supervisor(db, instance, command, env=os.environ, lease_seconds=seconds, grace=grace,
                                    pass_fds=pass_fds).run()
        finally:
            await db.close()

    sys.exit(asyncio.run(main()))
