"""canaryctl rollout / promote / rollback / pause / resume / signoff / baseline.

Commands are rows the daemon picks up within a second; the CLI waits for the daemon's
acknowledgement and prints its answer. Those that move a release forward (promote, resume,
signoff, baseline) carry an expiry (``--expires-in``, 10 minutes by default): the daemon refuses
one it reads later as expired. rollback and pause never expire. Exit status: 0 accepted, 1 refused by the daemon (the
message says why and what to do), 2 bad input, 3 no acknowledgement in time (the command stays
queued: the daemon acts on it when it comes back).
"""

from __future__ import annotations

from contextlib import closing
from pathlib import Path

import click

from controller.cli.context import given_by, open_database, open_store, operator_name, printable, run, wall_clock
from controller.cli.numbers import FiniteFloatRange
from controller.cli.output import print_json, print_table

NOT_ACKED = 3
_ROLLOUT = click.argument("rollout", metavar="ROLLOUT")
_WAIT = click.option("--wait", "wait_seconds", type=FiniteFloatRange(min=0), default=30.0, show_default=True,
                     help="Seconds to wait for the daemon's acknowledgement (0: do not wait).")
_JSON = click.option("--json", "as_json", is_flag=True, help="Print the outcome as one JSON object.")
_ACTOR = click.option("--actor", help="Who gives the command (default: $CANARY_ACTOR, else the login name).")
MAX_EXPIRY = 86400.0
"""The longest a command that moves a release forward may wait for the daemon: a day."""


def _expires_in(ctx: click.Context, param: click.Parameter, value: str) -> float:
    """``--expires-in``: a duration, more than 0, at most `MAX_EXPIRY` (a bad one exits 2 saying so)."""
    from controller.timespec import parse_duration

    try:
        seconds = parse_duration(value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None
    if not 0 < seconds <= MAX_EXPIRY:
        raise click.BadParameter(f"{value!r} is {seconds:g} s; expected more than 0 and at most 24h")
    return seconds


_EXPIRES = click.option("--expires-in", "expires_in", default="10m", show_default=True, callback=_expires_in,
                        metavar="DURATION",
                        help="How long the command stays valid (e.g. 90s, 30m, at most 24h): one the daemon reads "
                             "later is refused as expired, never applied late.")


@click.group()
def rollout() -> None:
    """Start rollouts and look at them (`canaryctl status` shows how one is doing).

    Example: canaryctl rollout start 1.4.0 && canaryctl status 1.4.0 --watch
    """


@rollout.command("start")
@click.argument("version")
@click.option("--pipeline", "pipeline_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Pipeline file (default: the shipped stages A to D).")
@click.option("--dry-run", "dry_run", is_flag=True,
              help="Place the release and judge one stage (--stage) without acting on any verdict: record what "
                   "would have been done; the account then gets its previous release back.")
@click.option("--stage", "dry_run_stage", metavar="NAME", help="With --dry-run: the stage to judge (default: the first).")
@_ACTOR
@_JSON
def start(version: str, pipeline_file: Path | None, dry_run: bool, dry_run_stage: str | None, actor: str | None,
          as_json: bool) -> None:
    """Start a rollout of release VERSION through the pipeline; the daemon takes it from there.

    Example: canaryctl rollout start 1.4.0 --pipeline pipelines/canary-only.yaml

    Example: canaryctl rollout start 1.4.0 --dry-run --stage C
    """
    from controller.rollout.info import create_rollout
    from controller.rollout.pipeline import DEFAULT_PIPELINE, load_pipeline

    pipeline = load_pipeline(pipeline_file)  # validated before anything is written
    if dry_run_stage is not None and not dry_run:
        raise click.UsageError("--stage names the stage of a dry run: give --dry-run too")
    if dry_run:
        try:
            pipeline = pipeline.dry_run_of(dry_run_stage)
        except KeyError:
            raise click.BadParameter(f"the pipeline {pipeline.name} has no stage {dry_run_stage!r} (it has: "
                                     f"{', '.join(s.name for s in pipeline.stages)})", param_hint="--stage") from None
    _check_pipeline(pipeline, str(pipeline_file or DEFAULT_PIPELINE))

    async def main():
        async with open_database() as db:
            return await create_rollout(db, wall_clock(), version=version, pipeline=pipeline, actor=operator_name(actor))

    info = run(main)
    if as_json:
        print_json(info.to_json())
    else:
        dry = " in dry run: nothing will be acted on" if dry_run else ""
        click.echo(f"rollout {info.id} of {info.release} created (pipeline {info.pipeline.name}: "
                   f"{' -> '.join(s.name for s in info.pipeline.stages)}{dry}); baseline {info.baseline or 'none'}. "
                   f"The daemon starts it within a second: `canaryctl rollout show {info.id}`")


def _check_pipeline(pipeline, source: str) -> None:
    """Refuse a pipeline the daemon could not run: a policy file missing from the policies folder, an
    environment the daemon's config does not define. Without a config, the policy files are checked
    against the shipped policies and the environments cannot be."""
    from controller import shipped
    from controller.cli.context import settings
    from controller.rollout import preflight

    config_path = settings().config_path
    if config_path is None:
        preflight.check_pipeline(pipeline, shipped.policies_dir(), source=source)
        click.echo("note: no daemon config (--config or $CANARY_CONFIG): the pipeline's policy files were checked "
                   "against the shipped policies, its environments are unchecked", err=True)
        return
    from controller.config.daemon import load_daemon_config

    config = load_daemon_config(config_path)
    preflight.check_pipeline(pipeline, config.policies_dir, source=source, environments=config.environments,
                             config_file=str(config_path))


@rollout.command("list")
@click.option("--active", is_flag=True, help="Only rollouts not finished.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def list_(active: bool, as_json: bool) -> None:
    """List rollouts, oldest first.

    Example: canaryctl rollout list --active
    """
    from controller.store import listing

    with closing(open_store()) as reader, reader.snapshot():
        rollouts = listing.rollouts(reader, active_only=active)
    if as_json:
        for record in rollouts:
            print_json(_rollout_json(record))
        return
    print_table(None, ["ID", "RELEASE", "STATE", "STAGE", "BASELINE", "UPDATED", "REASON"],
                ([r.id, r.release, r.status, r.stage_name, r.baseline or "-",
                  r.updated_at.strftime("%Y-%m-%d %H:%M:%S"), r.reason or ""] for r in rollouts))


@rollout.command("show")
@_ROLLOUT
@_JSON
def show(rollout: str, as_json: bool) -> None:
    """Show one rollout (an id, or a release version for its latest rollout) with its rollback steps.

    Example: canaryctl rollout show 1.4.0
    """
    from controller.store import listing, summary

    with closing(open_store()) as reader, reader.snapshot():
        record = listing.rollout(reader, rollout)
        steps = summary.rollback_steps(reader, record.id)
    if as_json:
        print_json({**_rollout_json(record), "rollback_steps": [
            {"position": s.position, "name": s.name, "state": s.state, "attempts": s.attempts,
             "account": s.account, "error": s.error} for s in steps]})
        return
    click.echo(f"rollout {record.id}: {record.release} ({record.status}, stage {record.stage_name}); "
               f"baseline {record.baseline or 'none'}")
    if record.reason:
        click.echo(f"  reason: {record.reason}")
    for key, who in sorted(record.decision_document.get("signoffs", {}).items()):
        click.echo(f"  signed: {key} by {who}")
    if steps:
        print_table("rollback steps", ["#", "STEP", "ACCOUNT", "STATE", "ATTEMPTS", "ERROR"],
                    ([s.position, s.name, s.account, s.state, s.attempts, s.error or ""] for s in steps))


def _rollout_json(record) -> dict:
    """A rollout as `RolloutInfo.to_json` gives it: its documents read into the engine's types, so a
    damaged one is refused (imported only for --json: the engine's types are slow to import)."""
    from controller.rollout.info import RolloutInfo

    return RolloutInfo.of(record).to_json()


def _command(rollout: str, kind: str, *, actor: str | None, reason: str | None, args: dict, wait_seconds: float,
             as_json: bool) -> None:
    from controller.rollout.info import get_rollout
    from controller.store.commands import await_ack, submit_command

    async def main():
        async with open_database() as db:
            info = await get_rollout(db, rollout)
            if kind == "promote" and args.get("stage") is None:
                # What the operator promotes is the stage they saw: if the rollout moves on before the
                # daemon reads the command, the next stage is not promoted by mistake.
                args["stage"] = info.stage.name
            command = await submit_command(db, wall_clock(), rollout_id=info.id, kind=kind, actor=operator_name(actor),
                                           reason=printable(reason) if reason else reason,
                                           args={**args, **given_by()})
            return info, await await_ack(db, command.id, timeout=wait_seconds)

    info, command = run(main)
    _report(command, f"rollout {info.id} ({info.release}): {kind}", wait_seconds, as_json)


def _report(command, what: str, wait_seconds: float, as_json: bool) -> None:
    """Print the daemon's answer; exit 1 when it refused, 3 when it did not answer in time."""
    if as_json:
        print_json(command.to_json())
    elif command.acked_at is None:
        click.echo(f"command {command.id} ({command.kind}) is queued; the daemon has not acknowledged it within "
                   f"{wait_seconds:g} s (is `canaryctl run` up?). It will act on it when it is.", err=True)
    else:
        click.echo(f"{what} {command.outcome}: {command.message}")
    if command.acked_at is None:
        raise SystemExit(NOT_ACKED)
    if command.outcome != "accepted":
        raise SystemExit(1)


@click.command("promote")
@_ROLLOUT
@click.option("--force", is_flag=True, help="Promote although the gate is shut (needs --reason; audited).")
@click.option("--reason", help="Why (required with --force).")
@click.option("--stage", metavar="NAME", help="The stage to promote; refused if the rollout is at another one "
                                              "(default: the stage it is at now).")
@_ACTOR
@_EXPIRES
@_WAIT
@_JSON
def promote(rollout: str, force: bool, reason: str | None, stage: str | None, actor: str | None,
            expires_in: float, wait_seconds: float, as_json: bool) -> None:
    """Promote ROLLOUT to its next stage once its gate is open (or by force, with a reason).

    Example: canaryctl promote 1.4.0 --force --reason "latency policy mis-tuned, see INC-231"
    """
    if force and not (reason or "").strip():
        raise click.UsageError("--force needs --reason TEXT: a forced promote is audited with its reason")
    _command(rollout, "promote", actor=actor, reason=reason,
             args={"force": force, "stage": stage, "expires_in": expires_in}, wait_seconds=wait_seconds,
             as_json=as_json)


@click.command("rollback")
@_ROLLOUT
@click.option("--reason", required=True, help="Why the rollout is rolled back (audited).")
@_ACTOR
@_WAIT
@_JSON
def rollback(rollout: str, reason: str, actor: str | None, wait_seconds: float, as_json: bool) -> None:
    """Roll ROLLOUT back to the previous release and config (also retries a failed rollback).

    Example: canaryctl rollback 7 --reason "fills look wrong on ETHUSDT"
    """
    if not reason.strip():
        raise click.UsageError("--reason must say why")
    _command(rollout, "rollback", actor=actor, reason=reason, args={}, wait_seconds=wait_seconds, as_json=as_json)


@click.command("pause")
@_ROLLOUT
@click.option("--reason", help="Why (audited).")
@_ACTOR
@_WAIT
@_JSON
def pause(rollout: str, reason: str | None, actor: str | None, wait_seconds: float, as_json: bool) -> None:
    """Hold ROLLOUT at its stage: no promotion until resumed; breaches still roll back.

    Example: canaryctl pause 1.4.0 --reason "exchange maintenance window"
    """
    _command(rollout, "pause", actor=actor, reason=reason, args={}, wait_seconds=wait_seconds, as_json=as_json)


@click.command("resume")
@_ROLLOUT
@_ACTOR
@_EXPIRES
@_WAIT
@_JSON
def resume(rollout: str, actor: str | None, expires_in: float, wait_seconds: float, as_json: bool) -> None:
    """Resume a paused ROLLOUT.

    Example: canaryctl resume 1.4.0
    """
    _command(rollout, "resume", actor=actor, reason=None, args={"expires_in": expires_in}, wait_seconds=wait_seconds,
             as_json=as_json)


@click.command("signoff")
@_ROLLOUT
@click.argument("stage")
@click.option("--by", "by", required=True, help="Who signs (recorded and audited).")
@click.option("--item", "items", multiple=True, help="The sign-off item (default: every item of the stage; a "
              "daily one's current day).")
@click.option("--day", type=click.IntRange(1, 1000), default=None,
              help="The day of a daily sign-off the --item names (default: the current day).")
@_EXPIRES
@_WAIT
@_JSON
def signoff(rollout: str, stage: str, by: str, items: tuple[str, ...], day: int | None, expires_in: float,
            wait_seconds: float, as_json: bool) -> None:
    """Sign off STAGE of ROLLOUT (e.g. the owner's review of the canary).

    A daily sign-off (``{name: standup-review, every: 1d}``) is signed once per day of the stage:
    named alone it signs the current day; ``--day N`` (or ``--item standup-review/day-N``) a day that
    has begun.

    Example: canaryctl signoff 1.4.0 C --by alice --item owner-review
    Example: canaryctl signoff 1.4.0 D --by alice --item standup-review --day 3
    """
    if day is not None:
        if not items:
            raise click.UsageError("--day needs --item NAME: the daily sign-off whose day it is")
        items = tuple(f"{item}/day-{day}" for item in items)
    _command(rollout, "signoff", actor=by, reason=None,
             args={"stage": stage, "items": list(items), "expires_in": expires_in}, wait_seconds=wait_seconds,
             as_json=as_json)


@click.command("baseline")
@click.argument("version")
@click.option("--environment", default="sim", show_default=True, help="Environment of the daemon's config.")
@click.option("--account", default="master", show_default=True, help="Account to run it on.")
@_ACTOR
@_EXPIRES
@_WAIT
@_JSON
def baseline(version: str, environment: str, account: str, actor: str | None, expires_in: float,
             wait_seconds: float, as_json: bool) -> None:
    """Place release VERSION on an account as the running (baseline) release, outside any rollout.

    Example: canaryctl baseline 1.3.2 --environment live --account master
    """
    from controller.store.commands import await_ack, submit_command
    from controller.store.releases import get_release

    async def main():
        async with open_database() as db:
            await get_release(db, version)
            command = await submit_command(db, wall_clock(), rollout_id=None, kind="place", actor=operator_name(actor),
                                           args={"release": version, "environment": environment, "account": account,
                                                 "expires_in": expires_in, **given_by()})
            return await await_ack(db, command.id, timeout=wait_seconds)

    _report(run(main), "baseline", wait_seconds, as_json)
