"""Request weight: what each call costs, and the controller's own share of the IP's minute limit.

Binance counts request weight per IP per calendar minute (2400 on USD-M futures) and reports
the IP's total in ``X-MBX-USED-WEIGHT-1M``. The bot and anything else on the host share that
limit, so the controller keeps its own spending under a budget (default 10 %) and refuses,
without sending, a call that would exceed it.
"""

from __future__ import annotations

from dataclasses import dataclass

from controller.clock import Clock
from controller.exchange.errors import BudgetExhausted

IP_LIMIT_PER_MINUTE = 2400
DEFAULT_SHARE = 0.10

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
    """The controller's spending per calendar minute, and the exchange's view of the IP's total."""

    clock: Clock
    share: float = DEFAULT_SHARE
    limit: int = IP_LIMIT_PER_MINUTE
    _minute: int = -1
    _spent: int = 0
    exchange_used: int = 0  # last X-MBX-USED-WEIGHT-1M seen (all clients of this IP)
    total_spent: int = 0

    @property
    def budget(self) -> int:
        return int(self.limit * self.share)

    @property
    def spent_this_minute(self) -> int:
        self._roll()
        return self._spent

    def reserve(self, weight: int, *, what: str) -> None:
        """Account for a call about to be sent, or refuse it if it would break the budget."""
        self._roll()
        if self._spent + weight > self.budget:
            retry_after = 60 - (self.clock.time() % 60)
            raise BudgetExhausted(f"{what} (weight {weight}) would exceed the controller's request-weight budget "
                                  f"({self._spent}/{self.budget} used this minute)", retry_after=retry_after)
        self._spent += weight
        self.total_spent += weight

    def observe(self, used_weight_header: str | None) -> None:
        if used_weight_header and used_weight_header.isdigit():
            self.exchange_used = int(used_weight_header)

    def _roll(self) -> None:
        minute = int(self.clock.time() // 60)
        if minute != self._minute:
            self._minute, self._spent = minute, 0
