"""What an exchange key may do (GET /sapi/v1/account/apiRestrictions), and whether that is too much.

A key the controller or a bot holds should trade USD-M futures and read, nothing more: a key that
can withdraw or move funds between accounts turns a leaked bot config into lost capital. `judge`
is pure, so each refusal is tested without an exchange; the daemon calls it at start and before
every placement (`controller.rollout.keys`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from controller.exchange.errors import ExchangeError


@dataclass(frozen=True)
class KeyRights:
    """The booleans of Binance's apiRestrictions answer, under its own names."""

    ipRestrict: bool
    enableReading: bool
    enableFutures: bool
    enableWithdrawals: bool
    enableInternalTransfer: bool
    permitsUniversalTransfer: bool
    enableMargin: bool
    enableSpotAndMarginTrading: bool


TOO_WIDE = {
    "enableWithdrawals": "withdraw funds",
    "enableInternalTransfer": "transfer funds between the master and its sub-accounts",
    "permitsUniversalTransfer": "make universal transfers",
    "enableMargin": "trade on margin",
    "enableSpotAndMarginTrading": "trade spot and margin",
}
"""The rights no key the controller uses may have: futures trading and reading are all it needs."""


def key_rights(raw: Any) -> KeyRights:
    """Read an apiRestrictions answer; one without every boolean is an error (a right not stated
    is never taken for a right not granted)."""
    if not isinstance(raw, Mapping):
        raise ExchangeError(f"the API restrictions answer is not an object: {type(raw).__name__}")
    names = [f.name for f in fields(KeyRights)]
    missing = [name for name in names if not isinstance(raw.get(name), bool)]
    if missing:
        raise ExchangeError(f"the API restrictions answer has no boolean {', '.join(missing)}")
    return KeyRights(**{name: raw[name] for name in names})


def judge(rights: KeyRights, *, kind: str, trading: bool = False, purpose: str | None = None) -> list[str]:
    """Why the key may not be used in an environment of ``kind`` (sim, testnet, live), ``trading``
    (placing a release) or only watching, or (``purpose="transfer"``) moving a capital ramp's funds
    between the master and its sub-accounts; empty when it may."""
    if purpose == "transfer":
        return _judge_transfer(rights, kind=kind)
    problems = [f"it can {what} ({name})" for name, what in TOO_WIDE.items() if getattr(rights, name)]
    if kind == "live" and not rights.ipRestrict:
        problems.append("it has no IP restriction (ipRestrict: false): on live a key must be bound to the "
                        "controller's addresses")
    if not rights.enableReading:
        problems.append("it cannot read the account (enableReading: false)")
    if trading and not rights.enableFutures:
        problems.append("it cannot trade USD-M futures (enableFutures: false)")
    return problems


TOO_WIDE_TO_TRANSFER = {name: what for name, what in TOO_WIDE.items() if name != "enableInternalTransfer"}
"""A transfer key may move funds between the master and its sub-accounts, and nothing else of `TOO_WIDE`:
above all, it must not withdraw."""


def _judge_transfer(rights: KeyRights, *, kind: str) -> list[str]:
    problems = [f"it can {what} ({name})" for name, what in TOO_WIDE_TO_TRANSFER.items() if getattr(rights, name)]
    if not rights.enableInternalTransfer:
        problems.append("it cannot transfer between the master and its sub-accounts (enableInternalTransfer: false)")
    if kind == "live" and not rights.ipRestrict:
        problems.append("it has no IP restriction (ipRestrict: false): on live a key must be bound to the "
                        "controller's addresses")
    if not rights.enableReading:
        problems.append("it cannot read the account (enableReading: false)")
    return problems
