"""What a stage's sign-offs still wait for: its items nobody has signed, and the distinct
operating-system users it still needs when it asks for more than one (``signers: 2`` is four eyes).

One rule for the decision that opens the gate and for the read model that shows what is pending.
A recurring sign-off (``{name: standup-review, every: 1d}``) asks for one item per period of the
stage (``standup-review/day-1`` ... ``/day-7``); a period that ended unsigned is overdue.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence


def pending(stage: str, items: Sequence[str], signers: int, signed: Mapping[str, str],
            signed_by: Sequence[str]) -> list[str]:
    """The items of ``stage`` not in ``signed`` (``STAGE/item`` -> who), then, when ``signers`` > 1
    and fewer distinct users than that are in ``signed_by``, how many more must sign."""
    missing = [item for item in items if f"{stage}/{item}" not in signed]
    short = signers - len(set(signed_by))
    if signers > 1 and short > 0:
        who = ", ".join(signed_by) if signed_by else "nobody yet"
        missing.append(f"{short} more signer{'s' if short > 1 else ''} (distinct operating-system users; "
                       f"signed by {who})")
    return missing


# ---------------------------------------------------------------- recurring sign-offs

Entry = tuple[str, float | None]
"""A sign-off of a stage as its pipeline lists it: its name, and how often it recurs (seconds; None: once)."""


def period_word(every: float) -> str:
    """What one period of a recurring sign-off is called in its items' names: ``day`` for a daily one."""
    return {86400.0: "day", 3600.0: "hour", 604800.0: "week"}.get(float(every), "period")


def periods(every: float, duration: float) -> int:
    """How many periods of ``every`` seconds a stage of ``duration`` seconds has (a last partial one counts)."""
    return max(1, math.ceil(duration / every - 1e-9))


def period_item(name: str, every: float, number: int) -> str:
    """The item that signs period ``number`` (from 1) of a recurring sign-off: ``standup-review/day-3``."""
    return f"{name}/{period_word(every)}-{number}"


def items(entries: Sequence[Entry], duration: float) -> list[str]:
    """Every item a stage asks for: a plain sign-off once, a recurring one once per period of the stage."""
    out: list[str] = []
    for name, every in entries:
        if every is None:
            out.append(name)
        else:
            out += [period_item(name, every, n) for n in range(1, periods(every, duration) + 1)]
    return out


def entries_of(spec: Sequence[str | Mapping[str, object]]) -> list[Entry]:
    """A stage's ``signoffs`` as stored with its rollout (names, or ``{name, every}``) as entries."""
    return [(item, None) if isinstance(item, str) else
            (str(item["name"]), None if item.get("every") is None else float(item["every"])) for item in spec]


def current_period(every: float, duration: float, started: float, now: float) -> int:
    """The period (from 1) of a recurring sign-off that ``now`` falls in, at most the stage's last."""
    return min(periods(every, duration), max(1, math.floor((now - started) / every) + 1))


def overdue(entries: Sequence[Entry], duration: float, started: float | None, now: float,
            signed: Collection[str], stage: str) -> list[str]:
    """The items of recurring sign-offs whose period ended (by ``now``) unsigned, as ``item`` names."""
    if started is None:
        return []
    late = []
    for name, every in entries:
        if every is None:
            continue
        for number in range(1, periods(every, duration) + 1):
            end = started + min(number * every, duration)
            if end > now:
                break
            item = period_item(name, every, number)
            if f"{stage}/{item}" not in signed:
                late.append(item)
    return late
