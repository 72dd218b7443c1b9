"""canaryctl note: the anomaly log of a rollout (the checklist's D4: "log any anomalies and resolutions").

A note is written to the audit chain at once (no daemon needed) and is shown by `canaryctl status`
and in the report. An open anomaly keeps the last stage (or one whose pipeline says
``anomalies: block``) from being promoted until it is resolved, or the promote is forced with a reason.
"""

from __future__ import annotations

import click

from controller.cli.context import open_database, operator_name, run, wall_clock
from controller.cli.output import print_json


@click.command("note")
@click.argument("rollout", metavar="ROLLOUT")
@click.option("--anomaly", "anomaly_text", metavar="TEXT", help="Log an anomaly seen on the rollout; prints its id.")
@click.option("--resolves", "anomaly_id", type=click.IntRange(min=1), metavar="ID",
              help="Resolve the anomaly ID (with --text saying how).")
@click.option("--text", "resolution_text", metavar="TEXT", help="How the anomaly was resolved (with --resolves).")
@click.option("--actor", help="Who writes the note (default: $CANARY_ACTOR, else the login name).")
@click.option("--json", "as_json", is_flag=True, help="Print the anomaly as one JSON object.")
def note(rollout: str, anomaly_text: str | None, anomaly_id: int | None, resolution_text: str | None,
         actor: str | None, as_json: bool) -> None:
    """Log an anomaly on ROLLOUT (an id or a release version), or record how one was resolved.

    Examples: canaryctl note 1.4.0 --anomaly "fills on ETHUSDT 2x the expected size"
              canaryctl note 1.4.0 --resolves 412 --text "sizing rounding, fixed in config 3f2a"
    """
    from controller.store.anomalies import checked_text, note_anomaly, resolve_anomaly

    if (anomaly_text is None) == (anomaly_id is None):
        raise click.UsageError("give either --anomaly TEXT (log one) or --resolves ID --text TEXT (resolve one)")
    if anomaly_text is not None and resolution_text is not None:
        raise click.UsageError("--text goes with --resolves; --anomaly carries its own text")
    if anomaly_id is not None and resolution_text is None:
        raise click.UsageError("--resolves ID needs --text TEXT saying how the anomaly was resolved")
    # Checked before the database is opened: a refused note writes nothing.
    if anomaly_text is not None:
        checked_text(anomaly_text, "--anomaly")
    else:
        checked_text(resolution_text, "--text")
    who = operator_name(actor)
    if not who:
        raise click.UsageError("--actor is empty: say who writes the note")

    async def main():
        from controller.rollout.info import get_rollout

        async with open_database() as db:
            info = await get_rollout(db, rollout)
            if anomaly_text is not None:
                return await note_anomaly(db, wall_clock(), rollout_id=info.id, release=info.release, stage=info.stage.name,
                                          actor=who, text=anomaly_text)
            return await resolve_anomaly(db, wall_clock(), rollout_id=info.id, release=info.release, anomaly_id=anomaly_id,
                                         actor=who, text=resolution_text)

    anomaly = run(main)
    if as_json:
        print_json(anomaly.to_json())
    elif anomaly.resolution is None:
        click.echo(f"anomaly {anomaly.id} logged on rollout {anomaly.rollout_id} (stage {anomaly.stage}) by "
                   f"{anomaly.actor}; resolve it with `canaryctl note {anomaly.rollout_id} --resolves {anomaly.id} "
                   "--text TEXT`")
    else:
        click.echo(f"anomaly {anomaly.id} of rollout {anomaly.rollout_id} resolved by {anomaly.resolution.actor}")
