"""What the analysis consumes and every source produces: timestamped observations and heartbeats.

Pure data owned by the analysis, so that the observers depend on it and not the other way round.
Observations and heartbeats are frozen msgspec Structs: every exchange event makes one or two, and a
Struct is built several times faster than a frozen dataclass. ``gc=False``: they hold no cycle.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import msgspec

Labels = tuple[tuple[str, str], ...]


def labels_of(mapping: Mapping[str, str] | None = None, **more: str) -> Labels:
    """Labels in their one canonical form: sorted (name, value) pairs."""
    merged = {**(mapping or {}), **more}
    return tuple(sorted((str(k), str(v)) for k, v in merged.items()))


class Observation(msgspec.Struct, frozen=True, gc=False):
    """``metric{labels} = value`` as true at ``ts`` (Clock seconds), seen by ``source``.

    Counters are observed as their running total (as Prometheus exposes them); events that
    happen once (a fill, an exception) are observed as samples of their own value.
    """

    source: str
    metric: str
    labels: Labels
    value: float
    ts: float

    def label(self, name: str) -> str | None:
        return next((v for k, v in self.labels if k == name), None)


class Heartbeat(msgspec.Struct, frozen=True, gc=False):
    """A source read successfully (``ok``) or failed to at ``ts``: what freshness is made of.

    A source with no recent successful heartbeat has no data, however old its last values.
    """

    source: str
    ts: float
    ok: bool = True
    error: str | None = None
    restarting: bool = False
    """The source stopped (it failed or ended) and starts again after a backoff."""


@dataclass(frozen=True, slots=True)
class Batch:
    """Observations read together (every sample of one scrape, stamped alike): a sink takes them in
    one call, and the evaluator judges what they touched once they are all in, not once per sample."""

    source: str
    observations: tuple[Observation, ...]


Sink = Callable[[Observation | Heartbeat | Batch], None]


def emit_all(sink: Sink, items: Iterable[Observation | Heartbeat]) -> None:
    for item in items:
        sink(item)
