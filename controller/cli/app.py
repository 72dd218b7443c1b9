"""The `canaryctl` entry point: global options, lazy command loading, errors to exit statuses.

Exit statuses: 0 ok; 1 the operation failed (or found a problem, e.g. a broken audit chain);
2 bad usage or refused input (nothing was written); 130 interrupted.
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import click

from controller import __version__
from controller.errors import CanaryError

# name -> (module, attribute, one-line help). The help lives here so that `canaryctl --help`
# lists every command without importing any of them.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "audit": ("controller.cli.audit", "audit", "Verify and query the tamper-evident audit trail."),
    "config": ("controller.cli.releases", "config", "Show and compare immutable config snapshots."),
    "baseline": ("controller.cli.rollouts", "baseline", "Place a release on an account as the running baseline."),
    "db": ("controller.cli.db", "db", "Create or upgrade the database schema."),
    "demo": ("controller.cli.daemon", "demo", "Run the canary story on the simulator in under a minute."),
    "harness": ("controller.cli.harness", "harness", "Run a release through a stage on the simulator, faults on a schedule."),
    "note": ("controller.cli.anomalies", "note", "Log an anomaly on a rollout, or how one was resolved (audited)."),
    "pause": ("controller.cli.rollouts", "pause", "Hold a rollout at its stage (breaches still roll back)."),
    "policy": ("controller.cli.policy", "policy", "Validate the policy files that gate each stage."),
    "promote": ("controller.cli.rollouts", "promote", "Promote a rollout past its gate (or by force, audited)."),
    "release": ("controller.cli.releases", "release", "Record releases and list them."),
    "report": ("controller.cli.report", "report", "A rollout's checklist filled from evidence; archive it, verify it."),
    "resume": ("controller.cli.rollouts", "resume", "Resume a paused rollout."),
    "review": ("controller.cli.review", "review", "The weekly review (stage E): leverage, buckets, breaches, harness runs."),
    "rollback": ("controller.cli.rollouts", "rollback", "Roll a rollout back to the previous release and config."),
    "rollout": ("controller.cli.rollouts", "rollout", "Start rollouts, list and show them."),
    "run": ("controller.cli.daemon", "run_daemon", "Run the controller daemon until SIGTERM."),
    "signoff": ("controller.cli.rollouts", "signoff", "Sign off a stage of a rollout."),
    "sim": ("controller.cli.sim", "sim", "Run the embedded Binance USD-M futures simulator."),
    "supervise": ("controller.cli.daemon", "supervise", "Run a bot under its placement lease (the deployer starts it)."),
    "status": ("controller.cli.status", "status", "Is the canary healthy? Stage, time left, verdicts, rollbacks."),
}


@dataclass
class Settings:
    """What the global options resolved to; commands read it from ``ctx.obj``."""

    db_url: str | None
    config_path: Path | None

    def warn_if_secret_on_command_line(self, db_from_argv: bool) -> None:
        if db_from_argv and self.db_url and _url_has_password(self.db_url):
            click.echo(
                "warning: the --db URL carries a password, which other users can read in the "
                "process list; set CANARY_DB or the config's database.password reference instead",
                err=True,
            )


def _url_has_password(url: str) -> bool:
    from urllib.parse import urlsplit

    try:
        return urlsplit(url).password is not None
    except ValueError:
        return False


class LazyGroup(click.Group):
    """A group whose subcommands are imported only when invoked."""

    def __init__(self, *args, registry: dict[str, tuple[str, str, str]], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.registry = registry

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.registry})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.registry:
            module, attr, _ = self.registry[cmd_name]
            return getattr(importlib.import_module(module), attr)
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, self.registry[name][2]) for name in sorted(self.registry)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(
    cls=LazyGroup,
    registry=COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog="Example: canaryctl --db sqlite:///canary.db audit verify\n\n"
    "Exit status: 0 ok, 1 failure, 2 bad usage or input (nothing written), 130 interrupted.",
)
@click.option("--db", "db_url", metavar="URL", envvar="CANARY_DB", show_envvar=True,
              help="Database URL (sqlite:///PATH or postgresql://USER@HOST/DB). "
                   "Default: $XDG_STATE_HOME/canary-controller/canary.db.")
@click.option("--config", "config_path", metavar="FILE", envvar="CANARY_CONFIG", show_envvar=True,
              type=click.Path(dir_okay=False, path_type=Path),
              help="Daemon configuration file (YAML).")
@click.version_option(__version__, prog_name="canaryctl")
@click.pass_context
def cli(ctx: click.Context, db_url: str | None, config_path: Path | None) -> None:
    """Take a trading-bot release safely into production on Binance USD-M futures."""
    settings = Settings(db_url=db_url, config_path=config_path)
    source = ctx.get_parameter_source("db_url")
    settings.warn_if_secret_on_command_line(source == click.core.ParameterSource.COMMANDLINE)
    ctx.obj = settings


def main(argv: list[str] | None = None) -> None:
    try:
        rv = cli.main(args=argv, prog_name="canaryctl", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except CanaryError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except BrokenPipeError:  # `canaryctl audit query | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
    sys.exit(rv if isinstance(rv, int) else 0)
