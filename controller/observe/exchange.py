"""The exchange source: the controller's own view of one account running a release.

`ExchangeObserver` runs the account's user-data stream into `on_event` (synchronous, no I/O:
the hot path, see `ExchangeView`) and, every ``snapshot_every`` seconds, reads the account over
REST: symbol settings, positions, the account's margin, and with a master key the balances of
every sub-account. The snapshot catches what events never say (leverage answered as applied but
not applied, a silent stream) and is the heartbeat of the source: ok only while the last pass
succeeded and the stream is connected and delivering, so a dead API or a stalled stream gives
``nodata``, never a silent pass.

Metrics (source ``exchange``; ts is the exchange's event time for events, the Clock's time at
the answer for snapshots):

- ``leverage_applied{symbol}``, ``leverage_mismatch{symbol}``: per leverage change and snapshot;
  ``margin_type_mismatch{symbol}``: per snapshot.
- ``fill_leverage_mismatch{symbol}``, ``fill_notional_ratio{symbol,bucket}``: per fill (the
  ratio: its order's notional over allocation x capital x configured leverage; reduce-only
  orders add no exposure and are not sized).
- ``exposure_ratio{symbol}``, ``exposure_total_ratio``: per position change and snapshot; in hedge
  mode a symbol's LONG and SHORT are two positions, and its exposure is their sum (gross).
- ``margin_ratio``: per snapshot and margin call; ``margin_calls``: 1 per MARGIN_CALL.
- ``order_outcomes{outcome}``: running totals of orders ended filled, canceled, expired or
  rejected, one count per order.
- ``capital_share`` (the capital moved into the account: its wallet at the first snapshot plus
  transfers since) and ``equity_share`` (its wallet plus unrealized PnL), each over the firm's
  total: per snapshot, only with a master client (the firm's total is only visible to the
  master key); without one they are never emitted.
- ``pnl_ratio``: per snapshot, (wallet + unrealized PnL - starting capital) / starting capital.
- ``stream_connected``: 1/0 when the stream connects, drops, or is found silent.
- ``foreign_activity{symbol}``: 1 per order update, fill, position change or leverage change on a
  symbol the config does not name, and per snapshot that finds such a position moved (or, at the
  first, one that changed since ``placed_at``: a predecessor's kept at the placement is not counted).
- ``liquidations{symbol,kind}``: 1 per order the exchange sent to close a position itself, kind
  ``liquidation`` (client id ``autoclose-...``, type LIQUIDATION) or ``adl`` (``adl_autoclose``),
  on cross or isolated margin alike.
- ``isolated_margin_ratio{symbol}``: per snapshot, each isolated position's maintenance margin over
  its isolated margin (``margin_ratio`` is the cross account's only); a hedged symbol's is its side
  nearer liquidation.
- ``account_mode_mismatch{mode}``: per snapshot (and multi-assets changes on the stream), 1 when
  the position mode or the multi-assets mode differs from the placement's (``modes``), or from the
  first reading when none was given.
- ``orders_placed``, ``account_fills``: running totals from the view's start of the orders the
  release created (not the controller's own, nor liquidations) and of every fill on the account:
  what a shadow stage's policy holds at 0 (its key cannot trade, so the exchange records none).
- ``own_orders_filled``, ``prior_orders_filled``: running totals of the fills that ended an order
  the release created while the view watched, and of those that ended an order created before
  (the release's or a predecessor's: the exchange cannot tell); the witness compares the bot's
  count of fills with them.
- ``order_outcomes{outcome="unfilled"}``: orders their own time in force (IOC, FOK, GTX) expired
  unfilled; ``expired`` counts only the other expiries.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal

from controller.analysis.observation import Sink
from controller.clock import Backoff, Clock
from controller.config.strategy import StrategyConfig
from controller.exchange.client import ExchangeClient
from controller.exchange.errors import BudgetExhausted, ExchangeError, RateLimited
from controller.exchange.events import AccountModes, ExchangeEvent, MarginCall, StreamStatus
from controller.exchange.parse import PayloadError
from controller.exchange.stream import StreamSettings, UserStream
from controller.exchange.weights import WeightBudget, weight_of
from controller.logs import get_logger
from controller.observe.exchange_view import SOURCE, ExchangeView
from controller.observe.source import Source

log = get_logger(__name__)

# What one snapshot pass reads (all symbols in one call each: the cost does not grow with symbols).
ACCOUNT_READS = (("GET", "/fapi/v2/account"), ("GET", "/fapi/v1/symbolConfig"), ("GET", "/fapi/v3/positionRisk"),
                 ("GET", "/fapi/v1/accountConfig"))
MASTER_READS = (("GET", "/fapi/v2/account"), ("GET", "/sapi/v2/sub-account/futures/accountSummary"))


def placed_modes(settings_before: dict | None) -> AccountModes | None:
    """The account modes a placement read before it changed anything (its ``settings_before``:
    the controller never changes them, so they are what the release must leave), or None."""
    before = settings_before or {}
    if before.get("position_mode") not in ("one-way", "hedge") or not isinstance(before.get("multi_assets"), bool):
        return None
    return AccountModes(hedge=before["position_mode"] == "hedge", multi_assets=before["multi_assets"])


class ExchangeObserver(Source):
    """Observations of one account from its user-data stream and low-rate REST snapshots, one
    every ``snapshot_every`` Clock seconds (the source's interval).

    ``capital``: the ratios' denominator; by default the account's wallet balance when `run`
    starts. ``master``: a client of the master account, for ``capital_share``; without one,
    ``capital_share`` is never emitted (a sub-account's key cannot see the firm's total), and a
    policy on it stays ``nodata``. ``modes``: the position and multi-assets modes the account had
    when the release was placed (the config has no such fields); by default the first reading.
    ``placed_at``: when the placement began; a position outside the config found by the first
    snapshot counts as the release's unless it last changed before then (without it, it counts).
    """

    def __init__(self, *, account: str, client: ExchangeClient, config: StrategyConfig, clock: Clock, sink: Sink,
                 master: ExchangeClient | None = None, snapshot_every: float = 30.0,
                 capital: Decimal | None = None, stream_settings: StreamSettings | None = None,
                 heartbeat_every: float = 1.0, modes: AccountModes | None = None,
                 placed_at: float | None = None) -> None:
        super().__init__(source=SOURCE, target=account, clock=clock, sink=sink, interval=snapshot_every)
        self.account = account
        self.client = client
        self.config = config
        self.master = master
        self.stream_settings = stream_settings or StreamSettings()
        self.view = ExchangeView(config=config, sink=sink, capital=capital, heartbeat_every=heartbeat_every,
                                 modes=modes, placed_at=placed_at)
        self.passes = 0
        self.failed_passes = 0
        self._wake = asyncio.Event()  # set by events that call for a fresh snapshot (no loop needed)

    # --- the hot path ---------------------------------------------------------------------------------

    def on_event(self, event: ExchangeEvent) -> None:
        """The user-data stream's sink: pure computation, no I/O, no await."""
        self.view.on_event(event)
        if isinstance(event, MarginCall) or (isinstance(event, StreamStatus) and event.connected):
            self._wake.set()  # margin moved, or a new connection: read the account again soon

    # --- the request-weight cost ------------------------------------------------------------------------

    @property
    def weight_per_pass(self) -> int:
        """Request weight of one snapshot pass on this IP (SAPI has its own limit and costs 0 here)."""
        reads = ACCOUNT_READS + (MASTER_READS if self.master is not None else ())
        return sum(weight_of(method, path) for method, path in reads)

    @property
    def weight_per_minute(self) -> float:
        return self.weight_per_pass * 60.0 / self.interval

    # --- life ---------------------------------------------------------------------------------------------

    async def follow(self) -> None:
        """Read the account once (capital, leverage), then run the stream and the snapshot loop."""
        started = self.clock.time()
        self.view.open(started)
        await self._first_snapshot()
        log.info("exchange_observer_started", account=self.account, capital=str(self.view.capital),
                 symbols=len(self.config.symbols), weight_per_minute=round(self.weight_per_minute, 1))
        stream = UserStream(self.client, tuple(self.config.symbols), self.on_event, settings=self.stream_settings,
                            since=started)
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(stream.run(), name=f"exchange-observer-stream-{self.account}")
            tasks.create_task(self._snapshot_forever(), name=f"exchange-observer-snapshots-{self.account}")

    async def _first_snapshot(self) -> None:
        """Until it succeeds: ratios need the capital, and fills need the applied leverage."""
        backoff = Backoff(self.clock, initial=min(1.0, self.interval), maximum=self.interval)
        while (delay := await self.snapshot(report=False)) is not None:
            await backoff.sleep(at_least=delay)

    async def _snapshot_forever(self) -> None:
        delay: float | None = None
        while True:
            await self._pause(self.interval if delay is None else max(delay, self.interval))
            delay = await self.snapshot()

    async def _pause(self, seconds: float) -> None:
        """Sleep ``seconds`` of Clock time, or less when an event asks for a fresh snapshot
        (never less than a tenth of the interval, so a burst of events cannot drive the loop)."""
        await self.clock.sleep(seconds / 10)
        sleeping = asyncio.create_task(self.clock.sleep(seconds * 0.9), name=f"exchange-observer-pause-{self.account}")
        woken = asyncio.create_task(self._wake.wait(), name=f"exchange-observer-wake-{self.account}")
        try:
            await asyncio.wait({sleeping, woken}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeping.cancel()
            woken.cancel()

    # --- one snapshot pass --------------------------------------------------------------------------------

    async def snapshot(self, *, report: bool = True) -> float | None:
        """One pass over the account; None when it succeeded, else how long to wait before the
        next (the exchange's Retry-After or the budget's next minute, 0 for other errors)."""
        self._wake.clear()
        self.passes += 1
        error, delay = None, None
        try:
            self._check_budget(self.client.budget, ACCOUNT_READS)
            if self.master is not None:
                self._check_budget(self.master.budget, MASTER_READS)
            await self._read()
        except (RateLimited, BudgetExhausted) as exc:
            error, delay = f"snapshot not taken: {exc}", exc.retry_after
        except (ExchangeError, PayloadError) as exc:
            error, delay = f"snapshot failed: {type(exc).__name__}: {exc}", 0.0
        if error is not None:
            self.failed_passes += 1
            log.warning("exchange_snapshot_failed", account=self.account, error=error)
        self.view.snapshot_done(self.clock.time(), error, report=report)
        return delay

    async def _read(self) -> None:
        client, view = self.client, self.view
        account = await client.account_snapshot()  # first: the first pass learns the capital here
        if view.capital is None and account.total_wallet_balance <= 0:
            raise ExchangeError(f"account {self.account} has no capital (wallet balance "
                                f"{account.total_wallet_balance}) to measure ratios against; fund it or pass capital=")
        view.on_account(account, at=self.clock.time())
        requested = self.clock.time()
        view.on_settings(await client.symbol_settings(), requested_at=requested, at=self.clock.time())
        requested = self.clock.time()
        positions, positions_at = await client.positions(), self.clock.time()
        modes = await client.account_modes()
        view.on_modes(AccountModes(hedge=modes["dualSidePosition"], multi_assets=modes["multiAssetsMargin"]),
                      at=self.clock.time())
        # Positions judged last: what their stall check finds, the pass reports at once.
        view.on_positions(positions, requested_at=requested, at=positions_at)
        if self.master is not None:
            master = await self.master.account_snapshot()
            subs = await self.master.sub_account_balances()
            view.on_balances(account.total_wallet_balance, master, subs, at=self.clock.time())

    def _check_budget(self, budget: WeightBudget, reads: tuple[tuple[str, str], ...]) -> None:
        """Refuse a whole pass the budget cannot pay for, rather than half of one."""
        needed = sum(weight_of(method, path) for method, path in reads)
        left = budget.budget - budget.spent_this_minute
        if needed > left:
            raise BudgetExhausted(f"a snapshot pass needs request weight {needed}, the controller's budget has "
                                  f"{left} left this minute", retry_after=60 - self.clock.time() % 60)
