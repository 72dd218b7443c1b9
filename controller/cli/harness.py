"""canaryctl harness run: a release through a stage on the simulator, faults on a schedule.

Exit status: 0 the run met expectation (no unexpected breach; every fault caught by a policy
expected to catch it, or ridden out when none was); 1 it did not, or it could not run; 2 bad
input (nothing was run or written).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from controller.cli.numbers import FiniteFloatRange

FAULTS_HELP = """Faults on a schedule: comma-separated items AT:KIND=NAME[=VALUE][:OPTION...], or a
YAML file listing them. AT is a time into the run (90s, 30m, 2h). KIND=NAME is defect=D (a release
carrying defect D is placed: wrong_leverage:SYMBOL=LEVERAGE, oversized_orders=FACTOR,
slow_signal_seconds=S, unhandled_exception_after_seconds=S, rejected_orders_burst=N,
oversized_exits=FACTOR, exits_never_sent) or sim=K (a simulator knob on the release's account:
ws_disconnect, listen_key_expired, ws_stall, latency_ms=MS, error_rate=SHARE, rate_limit_storm=DURATION,
duplicate_events=N, reorder_events, ignore_leverage). Options: for=DURATION (how long a knob stays
on), expect=POLICY|none (the policy that must catch it; defects default to the stage's policies
that watch what they move, sim faults to none: no breach allowed)."""


@click.group()
def harness() -> None:
    """Run a release through a stage on the simulator (checklist stages B and E).

    Example: canaryctl harness run --duration 48h --json
    """


@harness.command("run")
@click.option("--duration", default="48h", show_default=True, metavar="DURATION",
              help="Simulated time to run (e.g. 48h, 90m).")
@click.option("--speed", type=FiniteFloatRange(min=0, min_open=True, max=1000), default=None, metavar="N",
              help="Run the simulated clock N times faster than real time (at most 1000: a signed request "
                   "must arrive within 5 simulated seconds). Default: as fast as possible, stepped.")
@click.option("--symbols", type=click.IntRange(min=1), default=None, metavar="N",
              help="Trade only the strategy's first N symbols (default: all of them).")
@click.option("--faults", "spec", metavar="SPEC|FILE", help=FAULTS_HELP)
@click.option("--release", "version", metavar="VERSION", help="A recorded release to run (its config snapshot).")
@click.option("--strategy", "strategy_file", type=click.Path(dir_okay=False, path_type=Path),
              help="A strategy file to run (default: the reference bot's, examples/reference-bot/strategy.yaml).")
@click.option("--stage", default="B", show_default=True, metavar="STAGE",
              help="The stage whose policies judge the run (a policy file's `stage:`).")
@click.option("--seed", type=int, default=7, show_default=True, help="Seed of the simulator's market.")
@click.option("--entry-point", default="reference_bot.embedded:EmbeddedBot", show_default=True,
              metavar="MODULE:CALLABLE", help="The release's bot, run in this process (its package must be "
                                               "installed here).")
@click.option("--json", "as_json", is_flag=True, help="End with one JSON object (the result) as the last line.")
@click.option("--no-record", is_flag=True, help="Do not store the run in the database.")
@click.option("--junit", "junit_file", type=click.Path(dir_okay=False, writable=True, path_type=Path), metavar="FILE",
              help="Also write the result as JUnit XML: a test case per policy, per scheduled fault and for the run.")
def run_harness(duration: str, speed: float | None, symbols: int | None, spec: str | None, version: str | None,
                strategy_file: Path | None, stage: str, seed: int, entry_point: str, as_json: bool,
                no_record: bool, junit_file: Path | None) -> None:
    """Run a release through STAGE's policies on the simulator for DURATION of simulated time.

    Defects and simulator faults are injected on a schedule (--faults); when a policy catches
    one, the release is rolled back to the healthy one, judged afresh, and the run goes on to
    its end. A breach no fault explains is the release failing: recorded, and the run goes on.
    Progress goes to stderr every two seconds; the summary (or --json's object) to stdout. The
    run is stored as a rollout (pipeline "harness") that `canaryctl report` renders.

    \b
    Examples:
      canaryctl harness run --duration 48h --json
      canaryctl harness run --duration 12h --faults "2h:defect=wrong_leverage:SOLUSDT=20,5h:sim=ws_disconnect"
      canaryctl harness run --duration 6h --junit harness.xml   # for a CI's test report

    Exit status: 0 as expected (no unexpected breach, every fault caught by a policy expected
    to catch it, or ridden out), 1 not as expected or could not run, 2 bad input (nothing run).
    """
    from controller import shipped
    from controller.cli.context import run
    from controller.cli.output import print_json
    from controller.config.strategy import StrategyConfig
    from controller.harness.faults import check_schedule, load_schedule
    from controller.harness.plan import file_strategy, release_name, stage_policies
    from controller.harness.release import limit_symbols, load_entry_point
    from controller.harness.run import HarnessOptions
    from controller.harness.scoring import exit_status, not_judged
    from controller.timespec import parse_duration

    try:
        seconds = parse_duration(duration)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--duration") from None
    if seconds <= 0:
        raise click.BadParameter("must be longer than 0 s", param_hint="--duration")
    if version is not None and strategy_file is not None:
        raise click.UsageError("give --release VERSION or --strategy FILE, not both")
    config = _daemon_config()
    staged = stage_policies(config.policies_dir if config else shipped.policies_dir(), stage)
    faults = load_schedule(spec) if spec is not None else []
    load_entry_point(entry_point)  # refused now, before anything runs

    def plan(base: StrategyConfig) -> HarnessOptions:
        """The run of ``base`` (``--symbols`` of it), with the schedule checked against it."""
        strategy = limit_symbols(base, symbols)
        check_schedule(faults, duration=seconds, strategy=strategy, stage=staged.stage,
                       policies=[p for p in staged.policies if not_judged(p) is None], elsewhere=staged.elsewhere)
        return HarnessOptions(strategy=strategy, release=version or release_name(strategy_file, strategy),
                              stage=staged.stage, policies=staged.policies, faults=tuple(faults),
                              other_policies=staged.others, duration=seconds, speed=speed, seed=seed,
                              entry_point=entry_point)

    if junit_file is not None and not (junit_file.parent if str(junit_file.parent) else Path(".")).is_dir():
        raise click.BadParameter(f"{junit_file}: its folder {junit_file.parent} does not exist", param_hint="--junit")
    # All that needs no database is checked before one is opened: a refusal writes nothing.
    options = None if version is not None else plan(file_strategy(strategy_file))
    _logging(config)
    result = run(lambda: _run(options, plan, version, staged.file.name, record=not no_record))
    if junit_file is not None:
        from controller.harness.junit import write

        write(result, junit_file)
    if as_json:
        print_json(result.to_json())
    else:
        click.echo("\n".join(result.summary()))
    sys.exit(exit_status(result))


async def _run(options, plan, version: str | None, policies_file: str, *, record: bool):
    from controller.cli.context import open_database, wall_clock
    from controller.harness.plan import recorded_strategy
    from controller.harness.record import harness_release, record_run
    from controller.harness.run import Harness

    async with _maybe_database(record or version is not None, open_database) as db:
        if options is None:
            options = plan(await recorded_strategy(db, version))
        from controller.sim import Simulator

        harness = Harness(options, simulator=Simulator, on_progress=_progress)
        result = await harness.run()
        if record:
            new = None if version is not None else harness_release(options.strategy)
            result.rollout = await record_run(db, wall_clock(), result, harness.changes, version=version or new.version,
                                              policies_file=policies_file, started=harness.started_at,
                                              new_release=new)
        else:
            result.record_note = "--no-record"
        return result


def _maybe_database(wanted: bool, open_database):
    import contextlib

    return open_database() if wanted else contextlib.nullcontext(None)


def _daemon_config():
    from controller.cli.context import settings

    path = settings().config_path
    if path is None:
        return None
    from controller.config.daemon import load_daemon_config

    return load_daemon_config(path)


def _logging(config) -> None:
    """Library and bot logs to stderr, errors only: a 48 h run's warnings (a dropped stream the
    run itself injected) would drown the progress lines."""
    from controller import logs

    logs.configure("error", config.log.format if config else "console")


def _progress(p) -> None:
    caught = f", faults injected {p.injected}/{p.faults} ({p.caught} caught)" if p.faults else ""
    click.echo(f"harness: {p.simulated_s / 3600:5.1f} of {p.duration_s / 3600:g} h simulated "
               f"({100 * p.simulated_s / p.duration_s:3.0f} %), {p.breaches} breach{'es' * (p.breaches != 1)}"
               f"{caught}, {p.wall_s:.0f} s", err=True)
