"""One host's weight budget: observing spends at most its part, acting keeps its reserve."""

from __future__ import annotations

import pytest

from controller.exchange.errors import BudgetExhausted
from controller.exchange.weights import ACT, DEFAULT_ACT_RESERVE, DEFAULT_SHARE, OBSERVE, WeightBudget
from tests.support.clocks import make_clock


def spend_all(budget: WeightBudget, purpose: str) -> int:
    """Spend weight 1 at a time until ``purpose`` is refused; returns how much it spent."""
    spent = 0
    with pytest.raises(BudgetExhausted):
        while True:
            budget.reserve(1, what="a read", purpose=purpose)
            spent += 1
    return spent


def test_the_default_shares_give_observing_600_and_keep_1200_for_acting():
    budget = WeightBudget(make_clock(), share=DEFAULT_SHARE, act_reserve=DEFAULT_ACT_RESERVE)
    assert (budget.cap(OBSERVE), budget.cap(ACT), budget.reserved) == (600, 1800, 1200)


def test_a_tighter_reserve_gives_observing_240_and_keeps_1560_for_acting():
    budget = WeightBudget(make_clock(), share=0.75, act_reserve=0.65)
    assert (budget.cap(OBSERVE), budget.cap(ACT), budget.reserved) == (240, 1800, 1560)
    assert spend_all(budget, OBSERVE) == 240
    assert spend_all(budget, ACT) == 1560
    with pytest.raises(BudgetExhausted, match=r"for observe calls \(240/240 used this minute; 1560 more are kept"):
        budget.reserve(1, what="a read", purpose=OBSERVE)


def test_acting_within_its_reserve_leaves_observing_its_whole_part():
    budget = WeightBudget(make_clock(), share=0.75, act_reserve=0.65)
    budget.reserve(1000, what="a rollback", purpose=ACT)
    observing = budget.for_purpose(OBSERVE)
    assert observing.budget - observing.spent_this_minute == 240
    assert spend_all(budget, OBSERVE) == 240
    assert spend_all(budget, ACT) == 560


def test_acting_beyond_its_reserve_spends_what_observing_left():
    budget = WeightBudget(make_clock(), share=0.75, act_reserve=0.65)
    budget.reserve(100, what="watching", purpose=OBSERVE)
    budget.reserve(1650, what="a rollback", purpose=ACT)  # 90 beyond the reserve
    assert budget.for_purpose(OBSERVE).spent_this_minute == 190
    assert spend_all(budget, OBSERVE) == 50
    assert spend_all(budget, ACT) == 0


def test_the_budget_starts_afresh_each_minute():
    clock = make_clock()
    budget = WeightBudget(clock, share=0.75, act_reserve=0.65)
    spend_all(budget, ACT)
    clock.advance(60)
    assert budget.spent_this_minute == 0 and spend_all(budget, OBSERVE) == 240


@pytest.mark.parametrize("share, act_reserve", [(0.1, 0.2), (1.5, 0.5), (0.5, -0.1)])
def test_impossible_shares_are_refused(share, act_reserve):
    with pytest.raises(ValueError, match="0 <= act_reserve <= share <= 1"):
        WeightBudget(make_clock(), share=share, act_reserve=act_reserve)


def test_an_unknown_purpose_is_refused_before_any_call():
    with pytest.raises(ValueError, match="unknown purpose 'watch'"):
        WeightBudget(make_clock()).for_purpose("watch")
