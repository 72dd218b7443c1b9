"""Putting a release on an account and taking it off: the deployer and the deployments table in step.

Intent before action: a placement first writes the account's deployment row, "starting", naming
the deployment it replaces and the exchange settings the account had (`read_settings`), and only
then stops the old release, applies the new settings and starts the new one; the row says
"running" once it started. Whatever fails after the intent, a rollback finds the account in its
plan and knows what to put back. Both operations are idempotent, so a step that ran before a
crash can run again: a placement finds its own intent and goes on from it (keeping the settings
read before anything changed), starting a release that already runs with the same config starts
nothing, and stopping what is not running stops nothing.

Before all of it, the release's artifact is hashed again (`check_artifact`): content changed since
`release add` is never placed; and the account's exchange key is read for its rights
(`controller.rollout.keys`): a key that can withdraw, transfer or trade beyond futures is never
given to a bot.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from controller import failpoints
from controller.canonical import canonical_json
from controller.config.manifest import Toggle
from controller.config.strategy import StrategyConfig
from controller.deploy.base import DeployError, Running
from controller.errors import ConfigError, NotFoundError
from controller.logs import get_logger
from controller.release_files import artifact_now
from controller.rollout import keys, toggle_endpoint
from controller.rollout.site import Site, strategy_of
from controller.store import audit
from controller.store.database import Database
from controller.store.deployments import (
    DeploymentInfo,
    live_deployment,
    record_intent,
    record_running,
    record_stopped,
)
from controller.store.release_record import ReleaseInfo
from controller.store.releases import get_release, get_snapshot, record_snapshot

log = get_logger(__name__)


async def place(db: Database, site: Site, *, environment: str, account: str, release: str,
                rollout_id: int | None, previous_id: int | None = None,
                actor: str = "controller", settings_restored: bool = False, shadow: bool = False,
                restart: bool = False, toggle: bool = False,
                config_sha256: str | None = None) -> tuple[DeploymentInfo, Running]:
    """Run ``release`` with its config snapshot on the account, after stopping anything else there.

    ``settings_restored``: the caller (a rollback) has just set and read back the release's
    settings, so they are neither applied again nor read for a snapshot. ``shadow``: the release
    gets the account's read-only key and ``CANARY_SHADOW=1`` (a shadow stage). ``restart``: the
    release already runs there in the other mode (a shadow stage before a trading one): its bot is
    stopped and started again with this placement's key, in the same deployment. ``toggle``: the
    manifest's toggle, if it declares one, is turned on: in the snapshot placed (`toggled_config`),
    or by a POST to the started bot's endpoint (`toggle_endpoint.turn_on`; no yes fails the placement).
    ``config_sha256``: place exactly that stored snapshot instead of the release's own (a rollback
    restarting the previous deployment as it ran); one not in the store refuses the placement.
    """
    if config_sha256 is not None:
        if toggle:
            raise ValueError("a placement of a given snapshot turns no toggle on: the snapshot is placed as it is")
        info, config_text, config = await snapshot_config(db, release, config_sha256)
    else:
        info, config_text, config = await release_config(db, release)
    placed_sha = info.config_sha256 if config_sha256 is None else config_sha256
    if toggle:
        placed_sha, config_text = await toggled_config(db, site, info, config_text, actor=actor)
    await check_artifact(db, site, info, environment=environment, account=account, actor=actor)
    await keys.check_placement(db, site, environment=environment, account=account, release=release, actor=actor)
    if shadow:
        await keys.check_placement(db, site, environment=environment, account=account, release=release,
                                   actor=actor, shadow=True)
    live = await live_deployment(db, environment, account)
    deployer = site.deployer(environment)
    instance = site.instance(environment, account)
    if live is not None and live.release == release and live.rollout_id == rollout_id:
        intent = live  # written before a crash or a failed start: go on from it
    else:
        settings_before = None if settings_restored else await _settings_before(db, site, environment, account,
                                                                                config, live)
        if live is not None and live.state == "starting" and previous_id is None:
            previous_id = live.previous_id  # a placement that never started replaced nothing that ran
        intent = await record_intent(db, site.clock, rollout_id=rollout_id, environment=environment,
                                     account=account, instance=instance, release=release,
                                     settings_before=settings_before, actor=actor, previous_id=previous_id,
                                     config_sha256=placed_sha)
    failpoints.hit("placement.intent.after")
    current = await deployer.status(instance)
    if current is not None and ((current.release, current.config_sha256) != (release, placed_sha) or restart):
        await deployer.stop(instance)
        log.info("release_stopped", instance=instance, release=current.release,
                 reason="mode changed" if restart and current.release == release else "replaced")
        failpoints.hit("placement.stopped.after")
        if restart and current.release == release:
            current = None  # started again below with this placement's key (its settings applied again)
    if not settings_restored and (current is None
                                  or (current.release, current.config_sha256) != (release, placed_sha)):
        client = await site.client(environment, account, purpose="act")
        await apply_settings(client, {s: (c.leverage, c.margin_type) for s, c in config.symbols.items()})
        failpoints.hit("placement.settings.after")
    placement = site.placement(environment, account, release=release, manifest=info.manifest,
                               config_text=config_text, config_sha256=placed_sha, shadow=shadow)
    running = await deployer.start(placement)
    failpoints.hit("placement.started.after")
    declared = declared_toggle(info) if toggle else None
    if declared is not None and declared.endpoint is not None:
        # Before the row says "running": a bot that does not turn the feature on is a failed placement.
        await toggle_endpoint.turn_on(db, site.clock, running, declared.endpoint, environment=environment,
                                      account=account, deployment=intent.id, actor=actor)
    return await record_running(db, site.clock, intent.id, actor=actor), running


async def toggled_config(db: Database, site: Site, info: ReleaseInfo, config_text: str, *,
                         actor: str) -> tuple[str, str]:
    """The snapshot a stage with ``toggle: on`` places: the release's own with its manifest's toggle
    key set true, stored (content-addressed, audited) so the deployment row names what the bot ran.
    A manifest without a toggle, or with the endpoint form (`toggle_endpoint`), places its own
    snapshot. Returns (SHA-256, canonical text)."""
    toggle = declared_toggle(info)
    if toggle is None or toggle.config_key is None:
        return info.config_sha256, config_text
    try:
        switched = toggle.switched(json.loads(config_text), True)
    except ConfigError as error:
        # Checked at `release add`; a release recorded before toggles were checked is refused here.
        raise ConfigError(error.message, file=f"manifest of release {info.version}", field=error.field) from None
    sha = await record_snapshot(db, site.clock, switched, release=info.version, actor=actor,
                                derived={"from": info.config_sha256, "toggle": toggle.config_key, "on": True})
    return sha, canonical_json(switched)


def declared_toggle(info: ReleaseInfo) -> Toggle | None:
    """The feature toggle the release's recorded manifest declares, or None."""
    declared = info.manifest.get("toggle")
    return Toggle.model_validate(declared) if declared else None


class ArtifactChanged(DeployError):
    """The release's artifact is not the one recorded: its placement is refused."""


async def check_artifact(db: Database, site: Site, info: ReleaseInfo, *, environment: str, account: str,
                         actor: str) -> None:
    """Hash the release's artifact again, before anything changes on the account: content swapped
    after `release add` (or an artifact gone) refuses the placement, with an audit event naming the
    recorded digest and the one found."""
    found, problem = await asyncio.to_thread(artifact_now, info.manifest, info.version)
    if found == info.artifact_sha256:
        return
    source = {k: v for k, v in (info.manifest.get("artifact") or {}).items() if k in ("path", "package")}
    await audit.record(db, site.clock, actor=actor, kind="deploy.artifact_changed",
                       subject=f"account:{environment}/{account}", release=info.version,
                       payload={"recorded_sha256": info.artifact_sha256, "found_sha256": found,
                                "artifact": source, **({"problem": problem} if problem else {})})
    log.error("artifact_changed", release=info.version, account=f"{environment}/{account}",
              recorded=info.artifact_sha256, found=found)
    raise ArtifactChanged(f"release {info.version} is not placed on {environment}/{account}: its artifact was "
                          f"recorded with SHA-256 {info.artifact_sha256}, "
                          + (f"it now has {found}" if found else f"it has none now ({problem})")
                          + "; record the changed artifact as a new release")


async def _settings_before(db: Database, site: Site, environment: str, account: str, config: StrategyConfig,
                           live: DeploymentInfo | None) -> dict[str, Any]:
    """What the account holds for every symbol the live release or the new one names.

    A live row that never started (a placement that failed) already read what the account had
    before it changed anything: that reading wins over today's for the symbols it covers.
    """
    symbols = set(config.symbols)
    if live is not None:
        symbols |= set((await release_config(db, live.release))[2].symbols)
    earlier = live.settings_before if live is not None and live.state == "starting" else None
    if earlier:
        symbols |= set(earlier["symbols"])
    client = await site.client(environment, account, purpose="act")
    now = await read_settings(client, symbols)
    if earlier:
        now = {**now, **earlier, "symbols": {**now["symbols"], **earlier["symbols"]}}
    return now


async def read_settings(client, symbols) -> dict[str, Any]:
    """The account's exchange settings, as a rollback restores them: leverage and margin type of
    each of ``symbols``, the position mode and the multi-assets mode. A symbol the exchange does
    not answer for is an error: a snapshot with a hole would restore less than it should."""
    found, modes = await asyncio.gather(client.symbol_settings(), client.account_modes())
    settings = {s.symbol: [s.leverage, s.margin_type] for s in found}
    missing = sorted(set(symbols) - set(settings))
    if missing:
        raise RuntimeError(f"the exchange gave no leverage or margin type for {', '.join(missing)}")
    return {"symbols": {s: settings[s] for s in sorted(symbols)},
            "position_mode": "hedge" if modes["dualSidePosition"] else "one-way",
            "multi_assets": modes["multiAssetsMargin"]}


async def release_config(db: Database, release: str) -> tuple[ReleaseInfo, str, StrategyConfig]:
    """A release, its config snapshot's canonical text (what the bot is given) and its strategy."""
    info = await get_release(db, release)
    text = canonical_json((await get_snapshot(db, info.config_sha256)).config)
    return info, text, strategy_of(text, f"config of {release}")


class SnapshotMissing(DeployError):
    """A placement names a config snapshot the store does not have: nothing is placed."""


async def snapshot_config(db: Database, release: str, config_sha256: str) -> tuple[ReleaseInfo, str, StrategyConfig]:
    """A release with the stored snapshot ``config_sha256`` (full digest) rather than its own; its
    absence is `SnapshotMissing`, never the release's registered config in its place."""
    info = await get_release(db, release)
    try:
        snapshot = await get_snapshot(db, config_sha256)
    except NotFoundError:
        snapshot = None
    if snapshot is None or snapshot.sha256 != config_sha256:  # a prefix or a version is not this digest
        raise SnapshotMissing(f"config snapshot {config_sha256} of release {release} is not in the store: the "
                              "release is not started (not with its registered config either)")
    text = canonical_json(snapshot.config)
    return info, text, strategy_of(text, f"config {config_sha256[:12]} of {release}")


async def apply_settings(client, settings: dict[str, tuple[int, str]]) -> None:
    """Set each symbol's margin type and leverage, concurrently, and read the leverage back.

    Placing a release applies its config before the bot starts, so verification never judges
    a new release by the leverage its predecessor left; a rollback applies the previous config.
    """
    async def one(symbol: str, leverage: int, margin_type: str) -> None:
        await client.set_margin_type(symbol, margin_type)
        await client.set_leverage(symbol, leverage)
        await client.confirm_leverage(symbol, leverage)

    await asyncio.gather(*(one(s, lev, mt) for s, (lev, mt) in sorted(settings.items())))


async def unplace(db: Database, site: Site, deployment: DeploymentInfo, *, reason: str,
                  grace: float = 10.0) -> Running | None:
    """Stop the deployment's release (if it still runs there) and close its row.

    ``grace``: seconds between SIGTERM and SIGKILL (0: kill at once).
    """
    deployer = site.deployer(deployment.environment)
    current = await deployer.status(deployment.instance)
    stopped = None
    if current is None or current.release == deployment.release:  # none here: another host's may run, and
        stopped = await deployer.stop(deployment.instance, grace=grace)  # a stop fences it (supervised bots)
    await record_stopped(db, site.clock, deployment.id, reason=reason)
    return stopped
