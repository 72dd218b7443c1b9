"""canaryctl review: the weekly review of checklist stage E (E3), from the store, read-only.

``--json`` prints one object, schema version 1 (fields are only ever added; a removal or a change of
meaning raises ``version``). Times are ISO 8601 UTC; a period is ``[since, until)``.

    {"version": 1, "kind": "weekly-review",
     "period": {"since", "until", "seconds"}, "generated_at", "empty": true when nothing was recorded,
     "rollouts": [{id, release, pipeline, state (now), finished, outcome ("promoted", "rolled_back",
                   "dry_run_done" or "under way (STATE)"), reason, created_at, finished_at,
                   stages: [{name, started_at, finished_at, outcome}]}],
     "leverage": [FIGURES], "bucket_usage": [FIGURES],
     "policies": {folder: the policy files that classified them, unclassified: [policy names]},
     "breaches": [CHANGE],
     "rollbacks": [{rollout, release, planned_at (null: planned before the period), trigger, reason, policy,
                    steps_done, steps_failed, events}],
     "alerts": {recorded: false, note: "not recorded by the controller: see Alertmanager",
                controller_alerts: [{rollout, release, what, reason, at}]},
     "harness": {passed, failed, runs: [{rollout, at, release, stage, ok, result ("pass" | "fail"),
                 duration_s, simulated_s, breaches, unexpected_breaches, faults: [{spec, caught_by, ok}],
                 faults_caught, errors}]}}

    FIGURES = {policy, source, metric, outcomes: {VERDICT: count}, worst: {value, threshold, condition,
               verdict, group, rollout, at} or null, changes: [CHANGE]}
    CHANGE  = {rollout, release, stage, policy, group, verdict, value, threshold, condition, action, reason, at}

Like `canaryctl status`, it reads through `controller.store.readonly`: no SQLAlchemy on SQLite.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import click


def _instant(text: str, now: datetime, option: str) -> datetime:
    from controller.timespec import parse_instant

    try:
        return parse_instant(text, now)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=option) from None


@click.command("review")
@click.option("--since", "since_text", default="7d", show_default=True, metavar="T",
              help="Start of the period: an ISO time, or a duration ago (7d, 2w).")
@click.option("--until", "until_text", metavar="T", help="End of the period (exclusive): an ISO time, or a "
                                                               "duration ago. Default: now.")
@click.option("--archive", "archive_path", type=click.Path(path_type=Path), metavar="FILE.tar.gz|FOLDER",
              help="Write the review (JSON, text, the period's audit events) and a SHA-256 manifest to FILE "
                   "instead of printing it; a FOLDER gets review-SINCE-UNTIL.tar.gz. `canaryctl report verify` "
                   "checks it.")
@click.option("--force", is_flag=True, help="Replace an existing archive file.")
@click.option("--policies", "policies_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Policy folder that says which policies watch leverage and bucket usage (default: the "
                   "--config's policies_dir, else the shipped policies/).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (schema version 1, documented in "
                                                      "controller/cli/review.py).")
def review(since_text: str, until_text: str | None, archive_path: Path | None, force: bool,
           policies_dir: Path | None, as_json: bool) -> None:
    """The weekly review of checklist stage E: per rollout active in the period its release, stages
    reached and outcome; the exchange-side leverage policies' verdict changes and worst values; the
    bucket-usage policies' worst values; the breaches and rollbacks the controller recorded; alerts;
    and the nightly harness runs (pass or fail, faults caught).

    \b
    Examples:
      canaryctl review                       # the last 7 days
      canaryctl review --since 2026-03-02T00:00Z --until 2026-03-09T00:00Z --json
      canaryctl review --since 7d --archive /srv/archive/

    Exit status: 0 shown or written (an empty period too), 1 the database cannot be read, 2 bad input
    (a time that is none, a period that ends before it starts, an archive that exists).
    """
    now = datetime.now(tz=UTC)  # one instant: "7d" is exactly 7 days before the default end
    since = _instant(since_text, now, "--since")
    until = now if until_text is None else _instant(until_text, now, "--until")
    if since >= until:
        raise click.UsageError(f"the period starts at {since:%Y-%m-%d %H:%M:%S} UTC and ends at "
                               f"{until:%Y-%m-%d %H:%M:%S} UTC: --since must be before --until")
    from controller.report.review import archive_name, render, write_archive
    from controller.store.review import gather

    if archive_path is not None and not archive_path.is_dir():  # refused before the store is read
        _check_target(archive_path, force)
    folder = policies_dir or _policies_dir()
    kinds = _policy_kinds(folder)
    from controller.cli.context import open_store

    reader = open_store()
    try:
        found = gather(reader, since, until, policies=kinds, policies_folder=str(folder), now=now,
                       with_audit=archive_path is not None)
    finally:
        reader.close()
    if archive_path is None:
        if as_json:
            from controller.cli.output import print_json

            print_json(found.to_json())
        else:
            click.echo(render(found), nl=False)
        return
    target = archive_path
    if archive_path.is_dir():  # a folder: the file is named for the period
        target = archive_path / f"{archive_name(found)}.tar.gz"
        _check_target(target, force)
    written = write_archive(target, found, force=force)
    if as_json:
        from controller.cli.output import print_json

        period = found.to_json()["period"]
        print_json({"archive": str(written.path), "since": period["since"], "until": period["until"],
                    "empty": found.empty, "members": written.members, "bytes": written.bytes,
                    "sha256": written.sha256})
    else:
        click.echo(f"wrote {written.path}: review of {found.since:%Y-%m-%d %H:%M} to {found.until:%Y-%m-%d %H:%M} "
                   f"UTC, {written.members} members, {written.bytes} bytes, sha256 {written.sha256}")


def _check_target(target: Path, force: bool) -> None:
    if target.exists() and not force:
        raise click.UsageError(f"{target} exists; choose another name, or add --force to replace it")
    if not target.parent.is_dir():
        raise click.UsageError(f"folder {target.parent} does not exist")


def _policy_kinds(folder: Path) -> dict:
    """Each policy's source and metric, from every policy file in ``folder``."""
    from controller.analysis.policy import load_policies
    from controller.store.review import PolicyKind

    return {policy.name: PolicyKind(policy.source, policy.metric)
            for loaded in load_policies([folder]).values() for policy in loaded.policies}


def _policies_dir() -> Path:
    """The --config's policies_dir (itself the shipped policies unless set), else the shipped policies."""
    opts = click.get_current_context().find_root().obj
    if opts.config_path is not None:
        from controller.config.daemon import load_daemon_config

        return load_daemon_config(opts.config_path).policies_dir
    from controller import shipped

    return shipped.policies_dir()

