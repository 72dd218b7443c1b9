"""Moving a `SimulatedClock` by whole steps while clients sign requests on it.

A signed request carries the Clock's time when it is stamped; the simulator refuses it (-1021)
if the Clock has moved on by more than recvWindow (5 s) when it arrives, and
`ExchangeClient.sync_time` measures a false skew if the Clock jumps while it asks for the server
time. So the Clock jumps only at a quiet moment: no request between its stamp and its answer
(`InFlight`), and the event loop has settled (what an answer set off, such as the orders a
signal decided, has started). A jump of minutes is then, for every client, as if it had been
idle that long, and a 48 h stage runs on the real exchange layer in a minute of wall time.

The store's units of work (`SteppedDatabase`), the work handed to threads (`threads_counted`)
and the runner's scrapes of a bot's /metrics (`InFlight.trace_config` on the `Site`) count as in
flight too: the rollout runner's decisions and rollback steps, and a release's
artifact hashed again before it is placed, take no simulated time, as none of them waits on the clock.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager

import aiohttp
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncSession

from controller.clock import SimulatedClock
from controller.exchange.client import ExchangeClient
from controller.store.database import Database

HELD_POLL = 0.002
FINE_SPEED = 100.0
"""While stepping finely, the clock runs at most this many times faster than real time. Work that
is not all requests (a bot starting or stopping) may wait on real time where nothing counts as
in flight: python-binance's own socket exit (`async with` on a socket of its manager, as its
documentation uses it) polls every 0.1 s of wall time until its read loop has a message or its
10 s receive timeout passes. Unpaced, the steps came as fast as the loop turned: a release's
stop cost 900 to 1500 simulated seconds and a rollback's cancel_orders passed its 600 s deadline.
Paced, a wait on real time costs what it would cost a process at this speed (a 10 s wait: 1000
simulated seconds at most), and a start that waits on the clock (a streaming bot's first price,
on the simulator's next tick) is bounded below in wall time: 30 s of clock in 0.3 s."""
SETTLE_ROUNDS = 4
"""Loop turns without a new request before a moment counts as quiet: an answer's continuation
(a signal's orders, a stream event's follow-up) starts its next request within two."""


class InFlight:
    """Counts work the clock must not jump over: requests between their stamp and their answer."""

    def __init__(self) -> None:
        self.count = 0
        self.started = 0  # ever: tells a quiet loop turn from a busy one
        self._idle = asyncio.Event()
        self._idle.set()

    def begin(self) -> None:
        self.count += 1
        self.started += 1
        self._idle.clear()

    def end(self) -> None:
        self.count -= 1
        if not self.count:
            self._idle.set()

    @contextmanager
    def request(self) -> Iterator[None]:
        self.begin()
        try:
            yield
        finally:
            self.end()

    async def idle(self) -> None:
        await self._idle.wait()

    def trace_config(self) -> aiohttp.TraceConfig:
        """Counts the requests of an aiohttp session (a release's bot, which has its own client):
        python-binance stamps a request and starts it in one step, so the count covers it from
        its stamp to its answer's headers."""
        trace = aiohttp.TraceConfig()

        async def started(session, context, params) -> None:
            context.counted = True
            self.begin()

        async def ended(session, context, params) -> None:
            if getattr(context, "counted", False):  # each request ends once: its end, or its exception
                context.counted = False
                self.end()

        trace.on_request_start.append(started)
        trace.on_request_end.append(ended)
        trace.on_request_exception.append(ended)
        return trace


class SteppedClient(ExchangeClient):
    """The controller's `ExchangeClient`, its requests counted in ``in_flight`` (its one send path
    is `_send`)."""

    def __init__(self, *, in_flight: InFlight, **kwargs) -> None:
        super().__init__(**kwargs)
        self.in_flight = in_flight

    async def _send(self, *args, **kwargs):
        with self.in_flight.request():
            return await super()._send(*args, **kwargs)


class Stepper:
    """Moves ``clock`` only at quiet moments, by whole steps or (`run`, for a clock of speed 0)
    from one sleeper's deadline to the next.

    ``held``: how many of the requests in flight are being held on the clock itself (the
    simulator's injected latency); when every request out is held, the clock moves to the
    next sleeper's deadline, which is where the first of them is answered.
    """

    def __init__(self, clock: SimulatedClock, in_flight: InFlight, *, held: Callable[[], int] = lambda: 0,
                 settle_rounds: int = SETTLE_ROUNDS) -> None:
        self.clock = clock
        self.in_flight = in_flight
        self.held = held
        self.settle_rounds = settle_rounds
        self.max_step: float | None = None
        self.taken = 0

    @contextmanager
    def fine(self, seconds: float) -> Iterator[None]:
        """Jump at most ``seconds`` at a time meanwhile, and no faster than `FINE_SPEED` times real
        time: for work whose steps are not all requests (a bot starting: its websocket handshake;
        stopping: its sockets closing), so that it takes seconds, not minutes."""
        previous, self.max_step = self.max_step, seconds
        try:
            yield
        finally:
            self.max_step = previous

    async def quiet(self) -> None:
        """Return at a moment when no request is out (but those held on the clock) and none has
        started for ``settle_rounds`` turns of the loop."""
        calm = 0
        while calm < self.settle_rounds:
            if self.in_flight.count > self.held():
                # Not `idle()` alone: a request on its way may yet be held on the clock, and then
                # only a jump answers it. Look again every HELD_POLL wall seconds.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(HELD_POLL):
                        await self.in_flight.idle()
                calm = 0
                continue
            mark = self.in_flight.started
            await asyncio.sleep(0)
            calm = calm + 1 if self.in_flight.started == mark else 0

    async def advance(self, seconds: float) -> float:
        """Move the clock ``seconds`` on at the next quiet moment; returns the new time."""
        await self.quiet()
        self.clock.advance(seconds)  # no await between the check and the jump
        self.taken += 1
        return self.clock.time()

    async def run(self, until: float) -> None:
        """Discrete-event time: at each quiet moment jump to the next sleeper's deadline (the
        next thing that happens), never past ``until``. Returns when the clock reaches it."""
        clock = self.clock
        loop = asyncio.get_running_loop()
        paced_until = loop.time()  # wall time before which a fine step may not be taken
        while clock.time() < until:
            await self.quiet()
            if self.max_step is not None and (wait := paced_until - loop.time()) > 0:
                await asyncio.sleep(wait)
                continue  # the moment may be busy again: look for a quiet one
            now = clock.time()
            deadline = clock.next_deadline()
            target = until if deadline is None else min(max(deadline, now), until)
            if self.max_step is not None:
                target = min(target, now + self.max_step)
                paced_until = loop.time() + (target - now) / FINE_SPEED
            clock.advance(target - now)
            self.taken += 1


class SteppedDatabase(Database):
    """The store, each of its units of work counted in ``in_flight``: the clock does not jump while
    the rollout runner writes a decision or a rollback step (its timers and deadlines are the
    clock's), as it does not while a request is out."""

    def __init__(self, url: URL, *, in_flight: InFlight) -> None:
        super().__init__(url)
        self.in_flight = in_flight

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        with self.in_flight.request():
            async with super().read() as session:
                yield session

    @asynccontextmanager
    async def write(self, *, durable: bool = False) -> AsyncIterator[AsyncSession]:
        with self.in_flight.request():
            async with super().write(durable=durable) as session:
                yield session



@contextmanager
def threads_counted(in_flight: InFlight) -> Iterator[None]:
    """Meanwhile, the running loop's work handed to a thread (`asyncio.to_thread`: a release's
    artifact hashed again before it is placed) counts in ``in_flight`` until the loop has its
    answer: the clock does not jump meanwhile, as it does not while a request is out.

    Counted on the loop's side, not the thread's: a thread that says it is done before the loop
    has its answer would leave a quiet moment between the two, and the clock would jump in it."""
    loop = asyncio.get_running_loop()
    original = loop.run_in_executor

    def run_in_executor(executor, func, *args) -> asyncio.Future:
        in_flight.begin()
        try:
            future = original(executor, func, *args)
        except BaseException:
            in_flight.end()
            raise
        future.add_done_callback(lambda _: in_flight.end())  # before its awaiter's: the end comes first
        return future

    loop.run_in_executor = run_in_executor  # this loop only, while the run lasts
    try:
        yield
    finally:
        del loop.run_in_executor
