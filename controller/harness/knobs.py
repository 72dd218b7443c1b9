"""Turning a scheduled sim fault on and off through the simulator's fault knobs (`controller.sim.faults`)."""

from __future__ import annotations

from controller.harness.faults import Fault
from controller.sim.faults import Faults


def turn_on(faults: Faults, fault: Fault, account: str) -> None:
    name, value = fault.name, fault.value
    if name == "ws_disconnect":
        faults.drop_stream(account)
    elif name == "listen_key_expired":
        faults.expire_listen_key(account)
    elif name == "ws_stall":
        faults.stall_stream(account, True)
    elif name == "latency_ms":
        faults.add_latency(value / 1000.0)
    elif name == "error_rate":
        faults.fail(None, rate=value)
    elif name == "rate_limit_storm":
        faults.rate_limit_storm(value)
    elif name == "duplicate_events":
        faults.duplicate_events(account, value)
    elif name == "reorder_events":
        faults.reorder_events(account, True)
    elif name == "ignore_leverage":
        faults.ignore_leverage(account, None, True)
    else:
        raise ValueError(f"no knob for sim fault {name!r}")


def turn_off(faults: Faults, fault: Fault, account: str) -> None:
    """Undo `turn_on` (instant faults and the storm, which ends by itself, leave nothing on)."""
    name = fault.name
    if name == "ws_stall":
        faults.stall_stream(account, False)
    elif name == "latency_ms":
        faults.latency.pop(None, None)
    elif name == "error_rate":
        faults.errors = [rule for rule in faults.errors if not (rule.endpoint is None and rule.rate == fault.value)]
    elif name == "duplicate_events":
        faults.duplicate_events(account, 0)
    elif name == "reorder_events":
        faults.reorder_events(account, False)
    elif name == "ignore_leverage":
        faults.ignore_leverage(account, None, False)
