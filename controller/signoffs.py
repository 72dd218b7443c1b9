"""What a stage's sign-offs still wait for: its items nobody has signed, and the distinct
operating-system users it still needs when it asks for more than one (``signers: 2`` is four eyes).

One rule for the decision that opens the gate and for the read model that shows what is pending.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


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
