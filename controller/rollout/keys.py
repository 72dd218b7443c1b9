"""Least privilege of the accounts' exchange keys, checked at the daemon's start and before every placement.

Each key's rights are read from the exchange (GET /sapi/v1/account/apiRestrictions) and judged by
`controller.exchange.permissions.judge`: a key that can withdraw, transfer or trade margin/spot is
refused everywhere, and on `live` a key without an IP restriction. The Binance testnet has no SAPI:
there, unless a SAPI URL is configured, the check is skipped with a logged reason (never on live,
where a key whose rights cannot be read is refused).

A shadow stage's release holds the account's read-only key (``shadow_key``): that key is judged
the same way and must, besides, be unable to trade (``enableFutures: false``), so that the
exchange itself refuses every order the release sends.

A capital ramp moves funds with the master's transfer key (``transfer_key``): judged with
``purpose="transfer"``, it must be able to make internal transfers and must not withdraw. It is
checked at the start (where the master names one) and read again before every transfer.
"""

from __future__ import annotations

from controller.deploy.base import DeployError
from controller.errors import InputError
from controller.exchange.permissions import judge
from controller.logs import get_logger
from controller.rollout.site import Site
from controller.store import audit
from controller.store.database import Database

log = get_logger(__name__)


class KeyTooWide(DeployError):
    """The account's key may do more than the controller allows (or its rights cannot be read on
    live): the placement is refused."""


async def key_problems(site: Site, environment: str, account: str, *, trading: bool,
                       shadow: bool = False) -> list[str] | None:
    """Why the account's key (``shadow``: its read-only key) may not be used (empty: it may); None
    when its rights cannot be read on a testnet without SAPI, which is logged."""
    env = site.environment(environment)
    if shadow and site.account(environment, account).shadow_key is None:
        return ["the account names no shadow key (shadow_key, shadow_secret in the daemon's config)"]
    if not env.endpoints.sapi_url:
        if env.kind == "live":
            return ["its rights cannot be read: the environment has no SAPI URL (sapi_url)"]
        log.warning("key_rights_unchecked", environment=environment, account=account,
                    reason=f"a {env.kind} exchange without a SAPI URL cannot tell a key's rights "
                           "(the Binance testnet has no SAPI)")
        return None
    if shadow:
        client = await site.client(environment, account, purpose="shadow")
        rights = await client.api_restrictions()
        problems = judge(rights, kind=env.kind, trading=False)
        if rights.enableFutures:
            problems.append("it can trade USD-M futures (enableFutures): a shadow key must only read, so that the "
                            "exchange refuses the release's orders")
        return problems
    client = await site.client(environment, account, purpose="act" if trading else "observe")
    return judge(await client.api_restrictions(), kind=env.kind, trading=trading)


async def transfer_key_problems(site: Site, environment: str) -> list[str]:
    """Why the environment's master's transfer key may not move a ramp's funds (empty: it may). A key whose
    rights cannot be read is refused: moving money is never done on a key nobody checked."""
    env = site.environment(environment)
    master = site.master_of(environment)
    if master is None:
        return ["the environment has no master account (role: master)"]
    if site.account(environment, master).transfer_key is None:
        return [f"the master account {master} names no transfer key (transfer_key, transfer_secret in the "
                "daemon's config)"]
    if not env.endpoints.sapi_url:
        return ["its rights cannot be read: the environment has no SAPI URL (sapi_url)"]
    client = await site.client(environment, master, purpose="transfer")
    return judge(await client.api_restrictions(), kind=env.kind, purpose="transfer")


async def check_transfer(db: Database, site: Site, *, environment: str, release: str, actor: str) -> None:
    """The master's transfer key may transfer and nothing wider, read now; refused: an audit event naming
    each problem and `KeyTooWide`."""
    problems = await transfer_key_problems(site, environment)
    if not problems:
        return
    await audit.record(db, site.clock, actor=actor, kind="deploy.key_refused",
                       subject=f"account:{environment}/{site.master_of(environment)}", release=release,
                       payload={"problems": problems, "key": "transfer"})
    log.error("key_refused", release=release, environment=environment, key="transfer key", problems=problems)
    raise KeyTooWide(f"no capital is moved in {environment}: the master's transfer key is refused: "
                     + "; ".join(problems))


async def check_at_start(site: Site) -> None:
    """Every account of every environment holds a key no wider than watching needs; refused: an
    InputError (exit 2) naming the environment, the account and each right too wide."""
    for environment, env in sorted(site.environments.items()):
        for account in sorted(env.accounts):
            problems = await key_problems(site, environment, account, trading=False)
            if problems:
                raise InputError(f"environment {environment}, account {account}: its exchange key is refused: "
                                 + "; ".join(problems)
                                 + ". Use a key that may only read and trade USD-M futures"
                                 + (", bound to the controller's IP addresses" if env.kind == "live" else ""))
        master = site.master_of(environment)
        if master is not None and env.accounts[master].transfer_key is not None:
            problems = await transfer_key_problems(site, environment)
            if problems:
                raise InputError(f"environment {environment}, account {master}: its transfer key is refused: "
                                 + "; ".join(problems) + ". Use a key that may only read and make internal "
                                 "transfers between the master and its sub-accounts, never withdraw")


async def check_placement(db: Database, site: Site, *, environment: str, account: str, release: str,
                          actor: str, shadow: bool = False) -> None:
    """The account's key may trade futures and nothing wider (``shadow``: its read-only key may
    read and nothing more), read now (rights change without notice); refused: an audit event
    naming each problem and `KeyTooWide`."""
    problems = await key_problems(site, environment, account, trading=not shadow, shadow=shadow)
    if shadow and problems is None:
        # A shadow key's rights are the whole guarantee: unread, it is not taken for read-only.
        problems = ["its rights cannot be read (no SAPI URL): a shadow key is used only when the exchange says "
                    "it cannot trade"]
    if not problems:
        return
    key = "shadow key" if shadow else "exchange key"
    await audit.record(db, site.clock, actor=actor, kind="deploy.key_refused",
                       subject=f"account:{environment}/{account}", release=release,
                       payload={"problems": problems, "key": "shadow" if shadow else "trading"})
    log.error("key_refused", release=release, account=f"{environment}/{account}", key=key, problems=problems)
    raise KeyTooWide(f"release {release} is not placed on {environment}/{account}: its {key} is refused: "
                     + "; ".join(problems))
