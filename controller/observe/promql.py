"""The bot's metrics as a Prometheus server sees them, through its HTTP query API (instant queries).

Each entry of ``queries`` maps an observation name to a PromQL expression, e.g.
``{"signal_latency_p95": "histogram_quantile(0.95, sum by (le) (rate(strategy_signal_latency_seconds_bucket[5m])))"}``.
Every ``interval`` Clock seconds all of them are evaluated at the Clock's time
(``GET /api/v1/query?query=...&time=...``); each element of an instant vector becomes an
Observation named by its key, with the element's labels minus ``__name__`` and the evaluation
time as its ts; a scalar becomes one Observation without labels. An empty vector yields no
Observation (the analysis sees no data for that name, never a pass). ``NaN`` and ``±Inf`` answers
are passed on as read, for the evaluator to refuse and count.

One Heartbeat per pass: ok only if every query was answered. A pass in which some query failed
is a failed heartbeat naming each failure (``name: errorType: error``, as Prometheus reports
it), while the answers of the other queries are still emitted.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import aiohttp

from controller.analysis.observation import Labels, Observation, Sink, labels_of
from controller.clock import Clock
from controller.logs import get_logger
from controller.observe.source import PollingSource

log = get_logger(__name__)

Sample = tuple[Labels, float, float]
"""One element of a query's answer: ``(labels, value, evaluation time)``."""


class QueryError(Exception):
    """A query was not answered with a usable result; the message is what an operator needs."""


class PromQLSource(PollingSource):
    """Evaluates named PromQL expressions against ``base_url`` every ``interval`` Clock seconds."""

    def __init__(self, base_url: str, queries: Mapping[str, str], *, clock: Clock, sink: Sink,
                 interval: float = 30.0, timeout: float = 10.0, source: str = "bot") -> None:
        if not queries:
            raise ValueError("PromQLSource needs at least one query (name -> PromQL expression)")
        url = base_url.rstrip("/") + "/api/v1/query"
        super().__init__(source=source, target=url, clock=clock, sink=sink, interval=interval)
        if timeout <= 0:
            raise ValueError("timeout is a positive number of seconds")
        self.url = url
        self.queries = dict(queries)
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None
        self._failing_queries: set[str] = set()

    @asynccontextmanager
    async def holding(self) -> AsyncIterator[None]:
        """One HTTP session for every pass of a run."""
        async with aiohttp.ClientSession() as session:
            self._session = session
            try:
                yield
            finally:
                self._session = None

    async def read_once(self) -> bool:
        """Every query once, concurrently: their Observations, then one Heartbeat. Returns whether all succeeded."""
        ts = self.clock.time()
        if self._session is not None:
            outcomes = await self._query_all(self._session, ts)
        else:
            async with aiohttp.ClientSession() as session:
                outcomes = await self._query_all(session, ts)
        errors = []
        for name, outcome in outcomes.items():
            if isinstance(outcome, QueryError):
                errors.append(f"{name}: {outcome}")
                self._note_failure(name, str(outcome))
                continue
            self._note_success(name)
            for labels, value, at in outcome:
                self.sink(Observation(self.source, name, labels, value, at))
        if errors:
            self.fail(ts, "; ".join(errors))
        else:
            self.beat(ts)
        return not errors

    def _note_failure(self, name: str, error: str) -> None:
        if name not in self._failing_queries:
            self._failing_queries.add(name)
            log.warning("promql_query_failed", name=name, error=error)

    def _note_success(self, name: str) -> None:
        if name in self._failing_queries:
            self._failing_queries.discard(name)
            log.info("promql_query_recovered", name=name)

    async def _query_all(self, session: aiohttp.ClientSession, ts: float) -> dict[str, list[Sample] | QueryError]:
        async with asyncio.TaskGroup() as group:
            tasks = {name: group.create_task(self._query(session, expr, ts), name=f"promql-{name}")
                     for name, expr in self.queries.items()}
        return {name: task.result() for name, task in tasks.items()}

    async def _query(self, session: aiohttp.ClientSession, expr: str, ts: float) -> list[Sample] | QueryError:
        """The query's samples ``[(labels, value, ts)]``, or the QueryError saying why there are none."""
        params = {"query": expr, "time": f"{ts:.3f}"}
        try:
            async with session.get(self.url, params=params, timeout=aiohttp.ClientTimeout(total=self.timeout)) as r:
                try:
                    body = await r.json(content_type=None)
                except ValueError:
                    body = None
                status, reason = r.status, r.reason
        except TimeoutError:
            return QueryError(f"timeout: no answer within {self.timeout} s")
        except (aiohttp.ClientError, OSError) as exc:
            return QueryError(f"unreachable: {type(exc).__name__}: {exc}")
        if not isinstance(body, dict) or "status" not in body:
            return QueryError(f"HTTP {status} {reason or ''}".rstrip() + ": not a Prometheus API response")
        if body["status"] != "success":
            return QueryError(f"{body.get('errorType', f'HTTP {status}')}: {body.get('error', 'no error given')}")
        try:
            return samples(body.get("data"))
        except ValueError as exc:
            return QueryError(f"bad_response: {exc}")
        except (KeyError, TypeError, IndexError, AttributeError) as exc:
            return QueryError(f"bad_response: unexpected result shape ({type(exc).__name__}: {exc})")


def samples(data: Any) -> list[Sample]:
    """An instant query's ``data`` as ``[(labels, value, ts)]``; vectors and scalars only."""
    kind, result = data["resultType"], data["result"]
    if kind == "scalar":
        at, value = result
        return [((), float(value), float(at))]
    if kind == "vector":
        out = []
        for element in result:
            if "value" not in element and "histogram" in element:
                raise ValueError("native histogram samples are not observations; wrap the expression in "
                                 "histogram_quantile() or histogram_count()")
            at, value = element["value"]
            labels = {k: v for k, v in element["metric"].items() if k != "__name__"}
            out.append((labels_of(labels), float(value), float(at)))
        return out
    raise ValueError(f"resultType {kind!r} is not an instant vector or scalar (use an instant query "
                     "without a range selector)")
