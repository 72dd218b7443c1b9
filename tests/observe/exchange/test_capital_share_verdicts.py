"""The shipped stage-C capital policies end to end: the cap judges the capital moved into the
canary's sub-account, not what the canary earned with it.

The simulator's canary starts with 1 800 USDT of the firm's 100 000 (1.8 %, under the 2 % cap).
The canary trades through python-binance directly; the master moves money into it with the
sub-account transfer Binance offers (``POST /sapi/v1/sub-account/futures/internalTransfer``).
(python-binance signs that call over the emails unencoded and sends them encoded, which the
simulator, checking the signature over the raw parameters, refuses: `transfer` signs what it sends.)
The exchange observer (with the master's key, which alone sees the firm's total) feeds one
verification holding the shipped ``c-capital-share-*`` policies, with the stage's 2 % cap.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
from contextlib import asynccontextmanager
from decimal import Decimal
from urllib.parse import urlencode

import aiohttp
import pytest

from controller.analysis.policy import load_policies
from controller.analysis.verdict import Outcome
from controller.observe.exchange import ExchangeObserver
from controller.verification import Verification
from tests.support.bot import strategy
from tests.support.checkout import REPO
from tests.support.clients import binance_client
from tests.support.exchange_observer import SNAPSHOT_EVERY
from tests.support.verdicts import Verdicts

CAPITAL = [p for f in load_policies([REPO / "policies"]).values() for p in f.policies
           if p.name.startswith("c-capital-share")]
WITHIN_CAP = "c-capital-share-within-cap"
CAP = 0.02


async def transfer(sim, source: str, target: str, amount: str) -> dict:
    """The master's ``POST /sapi/v1/sub-account/futures/internalTransfer``, signed as Binance documents it
    with its transfer key (the only one allowed internal transfers)."""
    master = sim.accounts["master"].key("transfer")
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{sim.rest_url}/v1/time") as answer:
            now = (await answer.json())["serverTime"]
        query = urlencode({"fromEmail": sim.accounts[source].email, "toEmail": sim.accounts[target].email,
                           "futuresType": 1, "asset": "USDT", "amount": amount, "timestamp": now})
        signature = hmac.new(master.secret.encode(), query.encode(), hashlib.sha256).hexdigest()
        async with session.post(f"{sim.sapi_url}/v1/sub-account/futures/internalTransfer",
                                data=f"{query}&signature={signature}",
                                headers={"X-MBX-APIKEY": master.key,
                                         "Content-Type": "application/x-www-form-urlencoded"}) as answer:
            assert answer.status == 200, await answer.text()
            return await answer.json()


@asynccontextmanager
async def judged(connect, clock):
    """The canary's capital policies, judged on what the exchange shows of its account."""
    verdicts = Verdicts()
    verification = Verification(policies=CAPITAL, config=strategy(), clock=clock, on_verdicts=verdicts,
                                capital_cap=CAP, tick=0.1)
    observer = ExchangeObserver(account="canary", client=await connect("canary"), config=strategy(), clock=clock,
                                sink=verification.sink, master=await connect("master"), snapshot_every=SNAPSHOT_EVERY)
    task = asyncio.create_task(verification.run([observer.run]), name="test-verification")
    try:
        await verdicts.until_outcomes({p.name: Outcome.PASS for p in CAPITAL})
        yield verdicts
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_profitable_healthy_canary_is_not_rolled_back_for_its_profit(sim, connect, clock):
    async with judged(connect, clock) as verdicts, binance_client(sim, "canary") as canary:
        price = sim.market.price("BTCUSDT")
        await canary.futures_create_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.2")
        sim.set_price("BTCUSDT", price * Decimal("1.03"))  # 0.2 BTC gain about 3 % of 60 000: some 360 USDT
        await canary.futures_create_order(symbol="BTCUSDT", side="SELL", type="MARKET", quantity="0.2",
                                          reduceOnly="true")
        account = await canary.futures_account()
        assert Decimal(account["totalWalletBalance"]) > Decimal("2100")  # over 2 % of the firm's capital now
        # Judged on snapshots taken after the profit was made (five of them a second).
        closed = clock.time()
        await verdicts.until(lambda latest: all(v.at >= closed + 1.0 for v in latest.values()))
        for policy in CAPITAL:
            assert verdicts.latest[policy.name].outcome is Outcome.PASS, verdicts.latest[policy.name]
        assert verdicts.latest[WITHIN_CAP].value == pytest.approx(0.018, rel=0.01)
        equity = [v for n, v in verdicts.latest.items() if n != WITHIN_CAP]
        assert equity and all(v.value > CAP for v in equity)  # the profit is seen, and allowed for


async def test_a_canary_funded_past_its_cap_is_rolled_back(sim, connect, clock):
    async with judged(connect, clock) as verdicts:
        assert (await transfer(sim, "master", "canary", "500"))["success"] is True
        await verdicts.until_outcomes({WITHIN_CAP: Outcome.FAIL})
        breach = verdicts.latest[WITHIN_CAP]
        assert breach.action == "rollback" and breach.value == pytest.approx(0.023, rel=0.01)


async def test_a_transfer_while_the_stream_is_down_is_counted_when_it_reconnects(sim, connect, clock):
    """The stream cannot tell of a transfer it was not connected for: on reconnecting, the income
    rows of type TRANSFER since the last event it delivered are read, and the cap judges them."""
    async with judged(connect, clock) as verdicts:
        sim.faults.fail("/fapi/v1/listenKey")  # no new listenKey: the stream stays down once cut
        assert sim.faults.drop_stream("canary") >= 1
        assert (await transfer(sim, "master", "canary", "500"))["success"] is True
        sim.faults.clear()
        await verdicts.until_outcomes({WITHIN_CAP: Outcome.FAIL})
        assert verdicts.latest[WITHIN_CAP].value == pytest.approx(0.023, rel=0.01)
