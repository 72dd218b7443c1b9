"""Accounts on the simulated exchange: keys, USDT wallet, positions, leverage and margin type.

A position is one per symbol in one-way mode (position side BOTH, signed amount) and two per
symbol in hedge mode (LONG with a positive amount, SHORT with a negative one, each valued as a
one-way position of that size: a simplification of Binance's hedge-mode liquidation price).

Margin follows Binance's USD-M rules for a single-asset (USDT) account in one-way mode:
initial margin = |notional| / leverage; maintenance margin = |notional| * mmr - cum of the
position's bracket; margin ratio = maintenance margin / margin balance; the liquidation price is
Binance's published one-way formula. Open-order margin is simplified (every non-reduce-only
order reserves price * remaining / leverage; Binance nets it against the opposite position).
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass, field, replace
from decimal import Decimal

from controller.sim.market import Market, SymbolSpec

ZERO = Decimal(0)
DEFAULT_LEVERAGE = 20  # Binance's default initial leverage for a symbol never configured

API_RIGHTS = ("ipRestrict", "enableReading", "enableFutures", "enableWithdrawals", "enableInternalTransfer",
              "permitsUniversalTransfer", "enableMargin", "enableSpotAndMarginTrading", "enableVanillaOptions")
"""The booleans of GET /sapi/v1/account/apiRestrictions that a key's rights are set by."""
LEAST_PRIVILEGE = {name: name in ("enableReading", "enableFutures") for name in API_RIGHTS}
"""A key's rights unless a test changes them: a futures trading key that reads, nothing more, and
no IP restriction (every simulated request comes from the loopback)."""
READ_ONLY = {name: name == "enableReading" for name in API_RIGHTS}
"""The rights of each account's second key, its read-only one (what a shadow stage's release holds):
Binance's default for a new key, "Enable Reading" alone."""
TRANSFER = {name: name in ("enableReading", "enableInternalTransfer") for name in API_RIGHTS}
"""The rights of the master's third key, its transfer key (what a capital ramp moves funds with):
reading and internal transfers between the master and its sub-accounts, no withdrawal."""
KEY_KINDS = ("trading", "read-only", "transfer")
"""The keys an account has: its trading key and its read-only key; the master a transfer key too."""


@dataclass
class ApiKey:
    """One API key of an account: its secret and what it may do (apiRestrictions' booleans)."""

    key: str
    secret: str = field(repr=False)
    rights: dict[str, bool]
    kind: str = "trading"
    """``trading`` or ``read-only``: which of the account's keys it is (as the request log names it)."""

    @property
    def can_trade(self) -> bool:
        return self.rights["enableFutures"]


@dataclass(frozen=True)
class AccountSpec:
    """What an account starts with."""

    name: str
    balance: Decimal
    master: bool = False
    email: str | None = None


DEFAULT_ACCOUNTS = (
    AccountSpec("master", Decimal("98200"), master=True),
    AccountSpec("canary", Decimal("1800")),
)
"""A canary funded with 1.8 % of the firm's capital: below a 2 % cap, so that what it earns (which
the cap does not judge: it judges the capital moved in) is not mistaken for capital given to it."""


POSITION_SIDES = ("BOTH", "LONG", "SHORT")


@dataclass
class Position:
    symbol: str
    side: str = "BOTH"              # BOTH (one-way mode) | LONG | SHORT (hedge mode)
    amount: Decimal = ZERO          # signed: > 0 long, < 0 short
    entry_price: Decimal = ZERO
    realized: Decimal = ZERO        # accumulated realised PnL ("cr" in ACCOUNT_UPDATE)
    isolated_wallet: Decimal = ZERO
    update_ms: int = 0


@dataclass
class SymbolSettings:
    leverage: int = DEFAULT_LEVERAGE
    margin_type: str = "CROSSED"    # CROSSED | ISOLATED

    @property
    def isolated(self) -> bool:
        return self.margin_type == "ISOLATED"


@dataclass(frozen=True)
class PositionRisk:
    """A position valued at the current mark price: everything positionRisk and events show."""

    symbol: str
    amount: Decimal
    entry_price: Decimal
    break_even: Decimal
    mark: Decimal
    unrealized: Decimal
    notional: Decimal
    leverage: int
    margin_type: str
    isolated_wallet: Decimal
    initial_margin: Decimal
    position_initial_margin: Decimal
    open_order_margin: Decimal
    maint_margin: Decimal
    liquidation_price: Decimal
    max_notional: Decimal
    realized: Decimal
    bid_notional: Decimal
    ask_notional: Decimal
    update_ms: int
    position_side: str = "BOTH"

    @property
    def isolated(self) -> bool:
        return self.margin_type == "ISOLATED"


@dataclass(frozen=True)
class Totals:
    wallet: Decimal
    cross_wallet: Decimal
    unrealized: Decimal
    cross_unrealized: Decimal
    margin_balance: Decimal
    position_initial_margin: Decimal
    open_order_margin: Decimal
    maint_margin: Decimal
    available: Decimal

    @property
    def initial_margin(self) -> Decimal:
        return self.position_initial_margin + self.open_order_margin

    @property
    def margin_ratio(self) -> Decimal:
        if self.margin_balance <= 0:
            return Decimal("Infinity") if self.maint_margin > 0 else ZERO
        return self.maint_margin / self.margin_balance


@dataclass
class Account:
    name: str
    email: str
    api_key: str
    api_secret: str
    master: bool
    wallet: Decimal
    positions: dict[tuple[str, str], Position] = field(default_factory=dict)  # (symbol, side)
    settings: dict[str, SymbolSettings] = field(default_factory=dict)
    # symbol -> resting notional on each side (reserved by open orders), maintained by matching
    open_buy: dict[str, Decimal] = field(default_factory=dict)
    open_sell: dict[str, Decimal] = field(default_factory=dict)
    open_margin: dict[str, Decimal] = field(default_factory=dict)
    update_ms: int = 0
    margin_called: bool = False
    hedge: bool = False             # dualSidePosition: positions LONG and SHORT instead of BOTH
    multi_assets: bool = False      # multiAssetsMargin
    api_rights: dict[str, bool] = field(default_factory=lambda: dict(LEAST_PRIVILEGE))
    """What the account's trading key may do, as apiRestrictions answers it (see `set_api_rights`)."""
    read_only: ApiKey | None = None
    """The account's second key, which may only read (`READ_ONLY`): the key a shadow stage gives a release."""
    transfer: ApiKey | None = None
    """The master's third key (`TRANSFER`): internal transfers to and from its sub-accounts, no withdrawal."""

    def key(self, kind: str = "trading") -> ApiKey:
        """The account's ``trading``, ``read-only`` or (the master's) ``transfer`` key."""
        if kind == "trading":
            return ApiKey(self.api_key, self.api_secret, self.api_rights)  # the same rights, not a copy
        if kind == "read-only" and self.read_only is not None:
            return self.read_only
        if kind == "transfer" and self.transfer is not None:
            return self.transfer
        raise ValueError(f"no {kind!r} key; keys: {', '.join(KEY_KINDS)}")

    def set_api_rights(self, key: str = "trading", **rights: bool) -> dict[str, bool]:
        """Change some of a key's rights (apiRestrictions' names); an unknown name or a
        non-boolean is refused, leaving every right as it was."""
        unknown = sorted(set(rights) - set(API_RIGHTS))
        if unknown:
            raise ValueError(f"no API right {', '.join(unknown)}; rights: {', '.join(API_RIGHTS)}")
        if any(not isinstance(value, bool) for value in rights.values()):
            raise ValueError("each right is true or false")
        target = self.key(key).rights
        target.update(rights)
        return dict(target)

    def position(self, symbol: str, side: str = "BOTH") -> Position:
        if (symbol, side) not in self.positions:
            self.positions[(symbol, side)] = Position(symbol, side)
        return self.positions[(symbol, side)]

    @property
    def sides(self) -> tuple[str, ...]:
        """The position sides the account's mode holds."""
        return ("LONG", "SHORT") if self.hedge else ("BOTH",)

    def holds(self, symbol: str) -> bool:
        """Whether any position of ``symbol`` is open."""
        return any(p.amount for (s, _), p in self.positions.items() if s == symbol)

    def setting(self, symbol: str) -> SymbolSettings:
        if symbol not in self.settings:
            self.settings[symbol] = SymbolSettings()
        return self.settings[symbol]

    # -- valuation -----------------------------------------------------------------------------

    def risk(self, spec: SymbolSpec, market: Market, position_side: str = "BOTH") -> PositionRisk:
        pos = self.position(spec.symbol, position_side)
        setting = self.setting(spec.symbol)
        mark = market.price(spec.symbol)
        notional = pos.amount * mark
        bracket = spec.bracket_for(abs(notional))
        maint = max(ZERO, abs(notional) * bracket.mmr - bracket.cum) if pos.amount else ZERO
        pim = abs(notional) / setting.leverage
        oim = self.open_margin.get(spec.symbol, ZERO)
        unrealized = pos.amount * (mark - pos.entry_price) if pos.amount else ZERO
        # Guessed: break-even assumes a taker fee paid on entry and again on exit.
        side = 1 if pos.amount > 0 else -1
        break_even = pos.entry_price * (1 + side * Decimal("0.001")) if pos.amount else ZERO
        return PositionRisk(
            symbol=spec.symbol, amount=pos.amount, entry_price=pos.entry_price,
            break_even=break_even, mark=mark, unrealized=unrealized, notional=notional,
            leverage=setting.leverage, margin_type=setting.margin_type,
            isolated_wallet=pos.isolated_wallet if setting.isolated else ZERO,
            initial_margin=pim + oim, position_initial_margin=pim, open_order_margin=oim,
            maint_margin=maint, liquidation_price=ZERO, max_notional=spec.max_notional(setting.leverage),
            realized=pos.realized, bid_notional=self.open_buy.get(spec.symbol, ZERO),
            ask_notional=self.open_sell.get(spec.symbol, ZERO), update_ms=pos.update_ms,
            position_side=position_side,
        )

    def risks(self, market: Market, symbols: list[str] | None = None) -> list[PositionRisk]:
        """Positions valued at mark, with liquidation prices (which need the whole account)."""
        names = symbols if symbols is not None else list(market.specs)
        keys = {(s, side) for s, side in self.positions if s in market.specs}
        keys |= {(s, side) for s in names for side in self.sides}
        every = {key: self.risk(market.specs[key[0]], market, key[1]) for key in keys}
        cross = [r for r in every.values() if not r.isolated and r.amount]
        out = []
        for symbol in names:
            for side in self.sides:
                r = every[(symbol, side)]
                if r.amount:
                    r = _with_liquidation(r, market.specs[symbol], self._cross_wallet(), cross)
                out.append(r)
        return out

    def totals(self, market: Market) -> Totals:
        held = [self.risk(market.specs[s], market, side) for s, side in self.positions if s in market.specs]
        unrealized = sum((r.unrealized for r in held), ZERO)
        cross_unrealized = sum((r.unrealized for r in held if not r.isolated), ZERO)
        pim = sum((r.position_initial_margin for r in held), ZERO)
        oim = sum(self.open_margin.values(), ZERO)  # per symbol, whatever the position sides
        maint = sum((r.maint_margin for r in held if not r.isolated), ZERO)
        cross_wallet = self._cross_wallet()
        cross_pim = sum((r.position_initial_margin for r in held if not r.isolated), ZERO)
        available = cross_wallet + cross_unrealized - cross_pim - oim
        return Totals(
            wallet=self.wallet, cross_wallet=cross_wallet, unrealized=unrealized,
            cross_unrealized=cross_unrealized, margin_balance=self.wallet + unrealized,
            position_initial_margin=pim, open_order_margin=oim, maint_margin=maint,
            available=available,
        )

    def _cross_wallet(self) -> Decimal:
        isolated = sum((p.isolated_wallet for (s, _), p in self.positions.items()
                        if self.setting(s).isolated), ZERO)
        return self.wallet - isolated


def _with_liquidation(r: PositionRisk, spec: SymbolSpec, cross_wallet: Decimal,
                      cross: list[PositionRisk]) -> PositionRisk:
    """Binance's one-way liquidation price:
    LP = (WB - TMM1 + UPNL1 + cumB - side*size*EP) / (size*MMR - side*size)."""
    size = abs(r.amount)
    side = Decimal(1) if r.amount > 0 else Decimal(-1)
    bracket = spec.bracket_for(abs(r.notional))
    if r.isolated:
        wb, tmm, upnl = r.isolated_wallet, ZERO, ZERO
    else:
        others = [o for o in cross if (o.symbol, o.position_side) != (r.symbol, r.position_side)]
        wb = cross_wallet
        tmm = sum((o.maint_margin for o in others), ZERO)
        upnl = sum((o.unrealized for o in others), ZERO)
    denominator = size * bracket.mmr - side * size
    if denominator == 0:
        return r
    price = (wb - tmm + upnl + bracket.cum - side * size * r.entry_price) / denominator
    return replace(r, liquidation_price=max(ZERO, price))


class AccountBook:
    """Every account on the simulated exchange, found by name or by API key."""

    def __init__(self, specs: tuple[AccountSpec, ...] = DEFAULT_ACCOUNTS, *, seed: int = 0) -> None:
        if not any(s.master for s in specs):
            raise ValueError("one account must be the master (AccountSpec(..., master=True))")
        if len({s.name for s in specs}) != len(specs):
            raise ValueError("account names must be unique")
        rng = random.Random(f"keys-{seed}")
        self._by_name: dict[str, Account] = {}
        self._by_key: dict[str, tuple[Account, ApiKey]] = {}
        for spec in specs:
            account = Account(
                name=spec.name, email=spec.email or f"{spec.name}@sim.invalid",
                api_key=_key(rng), api_secret=_key(rng), master=spec.master, wallet=spec.balance,
            )
            self._by_name[spec.name] = account
            self._by_key[account.api_key] = (account, account.key())
        for account in self._by_name.values():  # drawn after every trading key: those stay what the seed gave
            account.read_only = ApiKey(_key(rng), _key(rng), dict(READ_ONLY), kind="read-only")
            self._by_key[account.read_only.key] = (account, account.read_only)
        # Drawn after every other key, which stay what the seed gave them.
        master = self.master
        master.transfer = ApiKey(_key(rng), _key(rng), dict(TRANSFER), kind="transfer")
        self._by_key[master.transfer.key] = (master, master.transfer)

    def __iter__(self):
        return iter(self._by_name.values())

    def __getitem__(self, name: str) -> Account:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"no account named {name!r}; accounts: {', '.join(self._by_name)}") from None

    def by_key(self, api_key: str) -> Account | None:
        found = self._by_key.get(api_key)
        return found[0] if found else None

    def credentials(self, api_key: str) -> tuple[Account, ApiKey] | None:
        """The account an API key belongs to, and which of its keys it is."""
        return self._by_key.get(api_key)

    @property
    def master(self) -> Account:
        return next(a for a in self._by_name.values() if a.master)

    def subaccounts(self) -> list[Account]:
        return [a for a in self._by_name.values() if not a.master]


_ALPHABET = string.ascii_letters + string.digits


def _key(rng: random.Random) -> str:
    """64 alphanumerics, the shape of a Binance HMAC API key and secret."""
    return "".join(rng.choice(_ALPHABET) for _ in range(64))
