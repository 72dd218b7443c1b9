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
from typing import Any

from controller import failpoints
from controller.canonical import canonical_json
from controller.config.strategy import StrategyConfig
from controller.deploy.base import DeployError, Running
from controller.logs import get_logger
from controller.release_files import artifact_now
from controller.rollout import keys
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
from controller.store.releases import ReleaseInfo, get_release, get_snapshot

log = get_logger(__name__)


async def place(db: Database, site: Site, *, environment: str, account: str, release: str,
                rollout_id: int | None, previous_id: int | None = None,
                actor: str = "controller", settings_restored: bool = False, shadow: bool = False,
                restart: bool = False) -> tuple[DeploymentInfo, Running]:
    """Run ``release`` with its config snapshot on the account, after stopping anything else there.

    ``settings_restored``: the caller (a rollback) has just set and read back the release's
    settings, so they are neither applied again nor read for a snapshot. ``shadow``: the release
    gets the account's read-only key and ``CANARY_SHADOW=1`` (a shadow stage). ``restart``: the
    release already runs there in the other mode (a shadow stage before a trading one): its bot is
    stopped and started again with this placement's key, in the same deployment.
    """
    info, config_text, config = await release_config(db, release)
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
                                     settings_before=settings_before, actor=actor, previous_id=previous_id)
    failpoints.hit("placement.intent.after")
    current = await deployer.status(instance)
    if current is not None and ((current.release, current.config_sha256) != (release, info.config_sha256) or restart):
        await deployer.stop(instance)
        log.info("release_stopped", instance=instance, release=current.release,
                 reason="mode changed" if restart and current.release == release else "replaced")
        failpoints.hit("placement.stopped.after")
        if restart and current.release == release:
            current = None  # started again below with this placement's key (its settings applied again)
    if not settings_restored and (current is None
                                  or (current.release, current.config_sha256) != (release, info.config_sha256)):
        client = await site.client(environment, account, purpose="act")
        await apply_settings(client, {s: (c.leverage, c.margin_type) for s, c in config.symbols.items()})
        failpoints.hit("placement.settings.after")
    placement = site.placement(environment, account, release=release, manifest=info.manifest,
                               config_text=config_text, config_sha256=info.config_sha256, shadow=shadow)
    running = await deployer.start(placement)
    failpoints.hit("placement.started.after")
    return await record_running(db, site.clock, intent.id, actor=actor), running


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
    async with db.write() as session:
        await audit.append(session, site.clock, actor=actor, kind="deploy.artifact_changed",
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
