"""The daemon's start-up sweep: no bot trades an account unless a record owns it.

A daemon killed between spawning a bot and recording it leaves a bot that no record names: it
holds the instance's lock but ``placement.json`` does not name it (the process deployer's
strays). A runner that resumes the placement kills it before it starts its own; one that does
not (the command withdrawn, the rollout ended) never would. So before the daemon says READY it
kills every such bot, on every account of every environment, and audits it. (systemd units are
found by name: a unit has no stray to kill.)
"""

from __future__ import annotations

from controller.logs import get_logger
from controller.rollout.site import Site
from controller.store import audit
from controller.store.database import Database

log = get_logger(__name__)


async def sweep_orphans(db: Database, site: Site) -> list[dict]:
    """Kill every bot no record owns; what was done, one entry per account that had one."""
    found = []
    for environment, access in site.environments.items():
        for account in access.accounts:
            instance = site.instance(environment, account)
            try:
                pids = await access.deployer.kill_strays(instance)
            except Exception as exc:  # noqa: BLE001 - one account's trouble must not hide the others'
                log.error("orphan_sweep_failed", environment=environment, account=account, error=repr(exc))
                continue
            if not pids:
                continue
            entry = {"environment": environment, "account": account, "instance": instance, "pids": pids}
            log.warning("orphans_killed", **entry,
                        reason="a bot ran that no record owns (a daemon died between spawning and recording it)")
            await audit.record(db, site.clock, actor=audit.CONTROLLER_ACTOR, kind="deploy.orphans_killed",
                               subject=f"account:{environment}/{account}", payload=entry)
            found.append(entry)
    return found
