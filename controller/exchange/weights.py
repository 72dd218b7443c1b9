"""Request weight: what each call costs, and the controller's own share of the IP's minute limit.

Binance counts request weight per IP per calendar minute (2400 on USD-M futures) and reports
the IP's total in ``X-MBX-USED-WEIGHT-1M``. The bots and anything else on the host share that
limit, so the controller keeps its own spending under one budget per exchange host (the daemon
has one outbound IP), shared by all its clients, and refuses, without sending, a call that would
exceed it. Part of that budget is reserved for acting (rollback, placement): observing can never
spend it, so however much the controller watches, a rollback finds the weight it needs.

The defaults, as shares of the IP's 2400 a minute: 75 % in all (1800), of which 50 % (1200) only
``act`` calls may spend; ``observe`` calls may spend the other 25 % (600). An account's observer
spends what its `weight_per_minute` says at start (50 at the daemon's 30 s snapshots, 120-150 at the
demo's 10 s: a snapshot pass of 15-20 and the stream's periodic checks), and each (re)connect of its
user stream reads the gap once (about 115 at 5 symbols: liquidation orders 50, income 30, symbol
settings and positions 10, the trades of the symbols that traded). A stage's start connects the
observers of its accounts at once, so observing needs room for a few connects on top of its steady
spending: at the old default of 10 % (240), a stage with a baseline account waited up to a minute
for its stream, and its snapshots were refused meanwhile. A rollback of one account of 10 symbols
costs at most 71 before safe: the act client's time sync 1; cancel_orders 20 (allOpenOrders 1 and
openOrders with a symbol 1, per symbol); positions 15 (one positionRisk of every symbol 5; market
orders weigh 0, a look-up after an ambiguous failure 1 per symbol); restore_leverage 30 (marginType
1 and leverage 1 per symbol, one symbolConfig read-back 5 of every symbol, which also says a margin
type that was kept); verify_previous 5 (symbolConfig); start_previous applies nothing again. The
whole rollback, phase 2's restart included, was charged 106 by the simulator (`make bench`:
``rollback_weight_per_account``). So 10 accounts x 10 symbols cost about 1060, within the 1200
reserved, in one minute, whatever observing spent.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from controller.clock import Clock
from controller.exchange.errors import BudgetExhausted

IP_LIMIT_PER_MINUTE = 2400
DEFAULT_SHARE = 0.75
"""The controller's whole share of the IP's weight a minute (see the module's arithmetic)."""
DEFAULT_ACT_RESERVE = 0.50
"""Of that share, what only acting may spend: observing may spend ``DEFAULT_SHARE - DEFAULT_ACT_RESERVE``."""
OBSERVE, ACT = "observe", "act"
PURPOSES = (OBSERVE, ACT)

# Weights from Binance's USD-M futures REST documentation. Order placement and cancellation
# count against the order-rate limits, not IP weight, except where a weight is stated.
WEIGHTS: dict[tuple[str, str], int] = {
    ("GET", "/fapi/v1/ping"): 1,
    ("GET", "/fapi/v1/time"): 1,
    ("GET", "/fapi/v1/exchangeInfo"): 1,
    ("GET", "/fapi/v1/leverageBracket"): 1,
    ("GET", "/fapi/v1/premiumIndex"): 10,  # all symbols; 1 with a symbol (see `weight_of`)
    ("GET", "/fapi/v1/symbolConfig"): 5,
    ("GET", "/fapi/v2/positionRisk"): 5,
    ("GET", "/fapi/v3/positionRisk"): 5,
    ("GET", "/fapi/v2/account"): 5,
    ("GET", "/fapi/v1/accountConfig"): 5,
    ("GET", "/fapi/v3/account"): 5,
    ("GET", "/fapi/v1/openOrders"): 40,  # all symbols; 1 with a symbol (see `weight_of`)
    ("GET", "/fapi/v1/order"): 1,
    ("GET", "/fapi/v1/userTrades"): 5,
    ("GET", "/fapi/v1/forceOrders"): 50,
    ("GET", "/fapi/v1/income"): 30,  # after a reconnect, transfers missed  # all symbols (20 with one): after a reconnect, liquidations missed
    ("POST", "/fapi/v1/order"): 0,
    ("DELETE", "/fapi/v1/order"): 1,
    ("DELETE", "/fapi/v1/allOpenOrders"): 1,
    ("POST", "/fapi/v1/leverage"): 1,
    ("POST", "/fapi/v1/marginType"): 1,
    ("POST", "/fapi/v1/listenKey"): 1,
    ("PUT", "/fapi/v1/listenKey"): 1,
    ("DELETE", "/fapi/v1/listenKey"): 1,
    # SAPI has its own per-IP limit (12 000/min), separate from the futures 2400: not charged here.
    ("GET", "/sapi/v2/sub-account/futures/accountSummary"): 0,
    ("GET", "/sapi/v1/account/apiRestrictions"): 0,
    ("POST", "/sapi/v1/sub-account/futures/internalTransfer"): 0,
}


def weight_of(method: str, path: str, params: dict | None = None) -> int:
    if method == "GET" and path in ("/fapi/v1/openOrders", "/fapi/v1/premiumIndex") and params and params.get("symbol"):
        return 1
    try:
        return WEIGHTS[(method, path)]
    except KeyError:
        raise KeyError(f"no known weight for {method} {path}: add it to WEIGHTS from Binance's docs") from None


@dataclass
class WeightBudget:
    """One host's request-weight spending per calendar minute, shared by every client of that host,
    and the exchange's view of the IP's total.

    ``share`` of the IP's limit in all, of which ``act_reserve`` only `ACT` calls may spend:
    `OBSERVE` calls may spend the rest, and acting whatever observing has left. A budget without
    a reserve (a one-shot client's) lets any call spend the whole share.
    """

    clock: Clock
    share: float = DEFAULT_SHARE
    limit: int = IP_LIMIT_PER_MINUTE
    act_reserve: float = 0.0
    _minute: int = -1
    _spent: dict[str, int] = field(default_factory=dict)  # this minute's, by purpose
    exchange_used: int = 0  # last X-MBX-USED-WEIGHT-1M seen (all clients of this IP)
    total_spent: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.act_reserve <= self.share <= 1:
            raise ValueError(f"a weight budget needs 0 <= act_reserve <= share <= 1, got act_reserve "
                             f"{self.act_reserve} and share {self.share}")

    @property
    def budget(self) -> int:
        """The whole share: what `ACT` calls may spend a minute."""
        return _whole(self.limit * self.share)

    @property
    def reserved(self) -> int:
        """The weight a minute that only `ACT` calls may spend."""
        return _whole(self.limit * self.act_reserve)

    def cap(self, purpose: str) -> int:
        """What calls of ``purpose`` may spend a minute."""
        if purpose == ACT:
            return self.budget
        if purpose == OBSERVE:
            return self.budget - self.reserved
        raise ValueError(f"unknown purpose {purpose!r}: expected one of {', '.join(PURPOSES)}")

    @property
    def spent_this_minute(self) -> int:
        """Every purpose's spending this minute."""
        self._roll()
        return sum(self._spent.values())

    def counted(self, purpose: str) -> int:
        """This minute's spending that counts against ``purpose``'s cap: for acting, everything;
        for observing, its own, or acting's beyond the reserve when that is more (acting that
        spent its reserve spends what observing has not)."""
        total = self.spent_this_minute
        if purpose == ACT:
            return total
        return max(self._spent.get(OBSERVE, 0), total - self.reserved)

    def reserve(self, weight: int, *, what: str, purpose: str = ACT) -> None:
        """Account for a call about to be sent, or refuse it if it would break ``purpose``'s cap."""
        cap, counted = self.cap(purpose), self.counted(purpose)
        if counted + weight > cap:
            retry_after = 60 - (self.clock.time() % 60)
            kept = f"; {self.reserved} more are kept for acting" if purpose != ACT and self.reserved else ""
            raise BudgetExhausted(f"{what} (weight {weight}) would exceed the controller's request-weight budget "
                                  f"for {purpose} calls ({counted}/{cap} used this minute{kept})",
                                  retry_after=retry_after)
        self._spent[purpose] = self._spent.get(purpose, 0) + weight
        self.total_spent += weight

    def for_purpose(self, purpose: str) -> PurposeBudget:
        """This budget as a client of ``purpose`` spends it."""
        self.cap(purpose)  # an unknown purpose is refused here, not at the first call
        return PurposeBudget(self, purpose)

    def observe(self, used_weight_header: str | None) -> None:
        if used_weight_header and used_weight_header.isdigit():
            self.exchange_used = int(used_weight_header)

    def _roll(self) -> None:
        minute = int(self.clock.time() // 60)
        if minute != self._minute:
            self._minute, self._spent = minute, {}


@dataclass(frozen=True)
class PurposeBudget:
    """A host's `WeightBudget` as one purpose's client sees it: its cap, out of the shared spending."""

    shared: WeightBudget
    purpose: str

    @property
    def budget(self) -> int:
        return self.shared.cap(self.purpose)

    @property
    def spent_this_minute(self) -> int:
        """What counts against this purpose's cap: ``budget - spent_this_minute`` is what it may still spend."""
        return self.shared.counted(self.purpose)

    @property
    def exchange_used(self) -> int:
        return self.shared.exchange_used

    @property
    def total_spent(self) -> int:
        return self.shared.total_spent

    def reserve(self, weight: int, *, what: str) -> None:
        self.shared.reserve(weight, what=what, purpose=self.purpose)

    def observe(self, used_weight_header: str | None) -> None:
        self.shared.observe(used_weight_header)


def _whole(weight: float) -> int:
    """Whole weight units of a share of the limit (2400 x 0.65 is 1560, not 1560.0000000000002 nor 1559)."""
    return int(round(weight, 6))
