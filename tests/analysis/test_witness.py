"""The witness: the bot's reported fills, applied leverage and bucket usage against the exchange's
record, and the shipped policies that judge the comparison."""

from __future__ import annotations

import pytest

from controller.analysis.evaluator import Evaluator
from controller.analysis.observation import Heartbeat, Observation, labels_of
from controller.analysis.policy import load_policies
from controller.analysis.verdict import Outcome
from controller.analysis.witness import Witness
from tests.support.bot import strategy
from tests.support.checkout import REPO

T0 = 1_767_225_600.0


def bot(metric: str, value: float, ts: float, **labels: str) -> Observation:
    return Observation("bot", metric, labels_of(**labels), value, ts)


def exchange(metric: str, value: float, ts: float, **labels: str) -> Observation:
    return Observation("exchange", metric, labels_of(**labels), value, ts)


def fed(witness: Witness, *items: Observation) -> list[Observation]:
    return [out for item in items for out in witness.observe(item)]


def connected(witness: Witness, ts: float = T0) -> Witness:
    """The exchange's stream is up: its count of fills is complete from here."""
    witness.observe(exchange("stream_connected", 1, ts))
    return witness


def test_fills_are_compared_from_the_bots_first_scrape_within_max_2_or_5_percent():
    witness = connected(Witness(strategy()))
    assert fed(witness, bot("strategy_orders_total", 7, T0, outcome="filled")) == []  # no exchange count yet
    first = fed(witness, exchange("own_orders_filled", 40, T0),
                bot("strategy_orders_total", 7, T0 + 1, outcome="filled"))
    assert [(o.source, o.metric, o.value) for o in first] == [("exchange", "witness_fill_divergence", 0.0)]
    # 2 fills apart is within the tolerance; 3 is not, while the counts are small.
    assert fed(witness, exchange("own_orders_filled", 42, T0 + 2),
               bot("strategy_orders_total", 7, T0 + 3, outcome="filled"))[0].value == 1.0
    assert fed(witness, bot("strategy_orders_total", 10, T0 + 4, outcome="filled"))[0].value == 0.5  # 3 vs 2
    assert fed(witness, bot("strategy_orders_total", 15, T0 + 5, outcome="filled"))[0].value == 3.0  # 8 vs 2
    # 5 % of 200 is 10: 9 apart is within it.
    witness = connected(Witness(strategy()))
    fed(witness, exchange("own_orders_filled", 0, T0), bot("strategy_orders_total", 0, T0, outcome="filled"))
    [late] = fed(witness, exchange("own_orders_filled", 191, T0 + 60),
                 bot("strategy_orders_total", 200, T0 + 60, outcome="filled"))
    assert late.value == pytest.approx(0.9)


def test_fills_of_orders_older_than_the_watch_may_be_in_the_bots_count_or_not():
    # A verification started while the release runs: 9 of the orders it rested before the watch fill
    # after its first scrape. The exchange cannot say whose they were; the bot counts them as its own.
    witness = connected(Witness(strategy()))
    fed(witness, exchange("own_orders_filled", 0, T0), exchange("prior_orders_filled", 4, T0),
        bot("strategy_orders_total", 30, T0, outcome="filled"))
    [counted] = fed(witness, exchange("prior_orders_filled", 13, T0 + 10), exchange("own_orders_filled", 3, T0 + 10),
                    bot("strategy_orders_total", 42, T0 + 20, outcome="filled"))
    assert counted.value == 0.0
    witness = connected(Witness(strategy()))  # a bot that does not count them as its own
    fed(witness, exchange("own_orders_filled", 0, T0), exchange("prior_orders_filled", 4, T0),
        bot("strategy_orders_total", 30, T0, outcome="filled"))
    [not_counted] = fed(witness, exchange("prior_orders_filled", 13, T0 + 10),
                        exchange("own_orders_filled", 3, T0 + 10), bot("strategy_orders_total", 33, T0 + 20,
                                                                        outcome="filled"))
    assert not_counted.value == 0.0
    # More than the exchange's own and prior fills together, or fewer than its own, still diverges.
    witness = connected(Witness(strategy()))
    fed(witness, exchange("own_orders_filled", 0, T0), exchange("prior_orders_filled", 0, T0),
        bot("strategy_orders_total", 0, T0, outcome="filled"))
    fed(witness, exchange("prior_orders_filled", 9, T0 + 10), exchange("own_orders_filled", 3, T0 + 10))
    assert fed(witness, bot("strategy_orders_total", 18, T0 + 20, outcome="filled"))[0].value == 3.0  # 6 over 12
    witness = connected(Witness(strategy()))
    fed(witness, exchange("own_orders_filled", 0, T0), exchange("prior_orders_filled", 0, T0),
        bot("strategy_orders_total", 0, T0, outcome="filled"))
    fed(witness, exchange("prior_orders_filled", 9, T0 + 10), exchange("own_orders_filled", 8, T0 + 10))
    assert fed(witness, bot("strategy_orders_total", 2, T0 + 20, outcome="filled"))[0].value == 3.0  # 6 short of 8


def test_paper_fills_of_a_shadow_stage_are_not_compared_with_the_exchange():
    witness = connected(Witness(strategy()))
    fed(witness, exchange("own_orders_filled", 0, T0))

    assert fed(witness, bot("strategy_orders_total", 30, T0 + 1, outcome="filled", mode="shadow")) == []
    [traded] = fed(witness, bot("strategy_orders_total", 0, T0 + 2, outcome="filled"))
    assert traded.value == 0.0


def test_a_restarted_bots_counter_counts_on_from_its_new_total():
    witness = connected(Witness(strategy()))
    fed(witness, exchange("own_orders_filled", 0, T0), bot("strategy_orders_total", 5, T0, outcome="filled"))
    fed(witness, exchange("own_orders_filled", 4, T0 + 10))
    [after] = fed(witness, bot("strategy_orders_total", 4, T0 + 20, outcome="filled"))  # restarted: 0 then 4 fills
    assert after.value == 0.0


def test_a_bots_nan_is_not_counted_into_the_comparison():
    witness = connected(Witness(strategy()))
    fed(witness, exchange("own_orders_filled", 0, T0), bot("strategy_orders_total", 0, T0, outcome="filled"))
    assert fed(witness, bot("strategy_orders_total", float("nan"), T0 + 1, outcome="filled")) == []
    [later] = fed(witness, bot("strategy_orders_total", 1, T0 + 2, outcome="filled"))
    assert later.value == 0.5


def test_the_bots_applied_leverage_must_be_the_exchanges():
    witness = connected(Witness(strategy()))
    assert fed(witness, bot("strategy_leverage_applied", 5, T0, symbol="BTCUSDT")) == []  # the exchange's unknown
    fed(witness, exchange("leverage_applied", 5, T0, symbol="BTCUSDT"))
    [same] = fed(witness, bot("strategy_leverage_applied", 5, T0 + 1, symbol="BTCUSDT"))
    [other] = fed(witness, bot("strategy_leverage_applied", 9, T0 + 2, symbol="BTCUSDT"))
    assert (same.value, other.value, other.label("symbol")) == (0.0, 1.0, "BTCUSDT")
    assert fed(witness, bot("strategy_leverage_applied", 20, T0 + 3, symbol="DOGEUSDT")) == []


def test_a_bucket_usage_below_what_the_exchange_holds_is_understated():
    config = strategy()
    witness = Witness(config)
    majors = config.buckets["majors"].symbols
    for symbol in majors:  # exposure: notional over capital; usage: over leverage too
        fed(witness, exchange("exposure_ratio", 0.5 if symbol == "BTCUSDT" else 0.0, T0, symbol=symbol))
    held = 0.5 / config.symbols["BTCUSDT"].leverage
    [honest] = fed(witness, bot("strategy_bucket_usage_ratio", held + 0.01, T0 + 1, bucket="majors"))
    [understated] = fed(witness, bot("strategy_bucket_usage_ratio", 0.0, T0 + 2, bucket="majors"))
    assert honest.value == 0.0 and understated.value == pytest.approx(held)


def test_a_profitable_bot_measuring_usage_against_its_grown_wallet_is_not_understating():
    """The exchange's exposure is over the starting capital; the reference bot's usage over its
    wallet now. After a 10 % profit an honest bot's figure is 1/1.1 of the exchange's."""
    config = strategy()
    witness = Witness(config)
    for symbol in config.buckets["majors"].symbols:
        fed(witness, exchange("exposure_ratio", 2.0 if symbol == "BTCUSDT" else 0.0, T0, symbol=symbol))
    held = 2.0 / config.symbols["BTCUSDT"].leverage
    fed(witness, exchange("pnl_ratio", 0.10, T0))
    [honest] = fed(witness, bot("strategy_bucket_usage_ratio", held / 1.1, T0 + 1, bucket="majors"))
    [lying] = fed(witness, bot("strategy_bucket_usage_ratio", held / 2, T0 + 2, bucket="majors"))
    assert honest.value == pytest.approx(0.0, abs=1e-12)
    assert lying.value == pytest.approx(held / 1.1 - held / 2)
    fed(witness, exchange("pnl_ratio", -0.10, T0 + 3))  # a loss: the exchange's figure stands as it is
    [after_loss] = fed(witness, bot("strategy_bucket_usage_ratio", held / 1.1, T0 + 4, bucket="majors"))
    assert after_loss.value == pytest.approx(held - held / 1.1)


def test_the_shipped_policy_rolls_back_a_bot_whose_fills_the_exchange_never_made():
    [stage_c] = [f for f in load_policies([REPO / "policies"]).values() if f.stage == "C" and f.mode == "trade"]
    policy = next(p for p in stage_c.policies if p.name == "c-bot-fills-match-exchange")
    assert policy.on_breach == "rollback"
    witness, evaluator = connected(Witness(strategy())), Evaluator([policy])
    verdicts = []

    def feed(item, now):
        verdicts.extend(evaluator.feed(item, now=now))
        if isinstance(item, Observation):
            for derived in witness.observe(item):
                verdicts.extend(evaluator.feed(derived, now=now))

    feed(exchange("own_orders_filled", 0, T0), T0)
    for second in range(0, 60, 5):  # the bot claims a fill every 5 s; the exchange refused them all
        now = T0 + second
        feed(Heartbeat("exchange", now), now)
        feed(bot("strategy_orders_total", second / 5, now, outcome="filled"), now)
        verdicts.extend(evaluator.evaluate(now))
    assert verdicts[-1].outcome is Outcome.FAIL and verdicts[-1].action == "rollback"
    first_fail = next(v for v in verdicts if v.outcome is Outcome.FAIL)
    assert first_fail.value > 1


def test_fills_are_not_compared_while_the_stream_is_down_and_start_afresh_after():
    witness = Witness(strategy())
    fed(witness, exchange("own_orders_filled", 0, T0))
    assert fed(witness, bot("strategy_orders_total", 5, T0, outcome="filled")) == []  # not connected yet
    fed(witness, exchange("stream_connected", 1, T0 + 1))
    assert fed(witness, bot("strategy_orders_total", 5, T0 + 2, outcome="filled"))[0].value == 0.0
    fed(witness, exchange("stream_connected", 0, T0 + 3))  # fills now are missed by the stream...
    assert fed(witness, bot("strategy_orders_total", 9, T0 + 4, outcome="filled")) == []
    fed(witness, exchange("stream_connected", 1, T0 + 5))  # ...so both counts start again here
    assert fed(witness, bot("strategy_orders_total", 9, T0 + 6, outcome="filled"))[0].value == 0.0
    fed(witness, exchange("own_orders_filled", 1, T0 + 7))
    assert fed(witness, bot("strategy_orders_total", 10, T0 + 8, outcome="filled"))[0].value == 0.0
