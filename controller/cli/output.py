"""How commands print data: a table for people (colour only on a terminal), JSON for scripts."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from decimal import Decimal
from datetime import datetime
from typing import Any


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def json_line(value: Any) -> str:
    return json.dumps(value, default=_default, ensure_ascii=False)


def print_json(value: Any) -> None:
    sys.stdout.write(json_line(value) + "\n")


def print_table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
    """Render rows as a table on stdout, one line per row (long cells end in an ellipsis);
    returns how many rows were printed."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_lines=False, header_style="bold", box=None, pad_edge=False)
    for n, column in enumerate(columns):
        last = n == len(columns) - 1
        table.add_column(column, no_wrap=True, overflow="ellipsis", max_width=80 if last else None)
    count = 0
    for row in rows:
        table.add_row(*("" if cell is None else str(cell) for cell in row))
        count += 1
    # Piped into a file or a pager, rows should not be cut to 80 columns.
    width = None if sys.stdout.isatty() else 240
    Console(width=width, soft_wrap=False).print(table)
    return count
