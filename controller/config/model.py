"""What every model read from a file is made of: the base model, shared field types, located errors."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictInt
from pydantic_core import PydanticCustomError

Loc = tuple[str | int, ...]

LOCATION_KEY = "config_at"  # context key of `error_at`; chosen so no message template contains it


class ConfigModel(BaseModel):
    """Base of every model read from a file: immutable once loaded, unknown keys refused."""

    model_config = ConfigDict(frozen=True, extra="forbid")


MIN_FRACTION = Decimal("1e-9")
Fraction = Annotated[Decimal, Field(ge=MIN_FRACTION, le=1)]
"""A share of a whole, in [1e-9, 1]: allocations, order sizes, capital caps. Anything smaller is a
typo, not a share (``1.0e-999999999999999999`` would otherwise be recorded as a positive one)."""


def error_at(path: Loc, message: str) -> PydanticCustomError:
    """An error for a model validator to raise that points below the model, e.g. at one list item.

    ``path`` is relative to the model being validated; the loader adds it to pydantic's location
    so the operator is sent to the exact line.
    """
    return PydanticCustomError("config_value", message, {LOCATION_KEY: tuple(path)})


Int = StrictInt
"""An integer that refuses YAML booleans (``port: yes``) and quoted numbers."""
