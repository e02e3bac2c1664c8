"""The always-valid multiplier and the sequential guardrail verdict (pex.monitor.sequential)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pex.errors import DataError
from pex.evaluation.estimators import Estimate
from pex.experiment.guardrail import GuardrailRule, z_value
from pex.monitor.sequential import multiplier, sequential_harm, tightest_x
from pex.online.lifts import harm_of

PLANNED = 5_000
NS = [2, 10, 100, 1_000, 2_500, 5_000, 10_000, 100_000, 10**7]


def _mean(value: float, se: float, n: int) -> Estimate:
    contributions = np.full(n, value)
    contributions.setflags(write=False)
    return Estimate("snips", value, se, value - 1.96 * se, value + 1.96 * se, n, contributions)


def test_the_multiplier_exceeds_the_fixed_quantile_at_every_n():
    for alpha in (0.05, 0.01):
        assert all(multiplier(n, PLANNED, alpha) > z_value(alpha) for n in NS)


def test_the_multiplier_is_tightest_at_the_planned_units():
    # the mixture is tuned to planned_n: at that n no other tuning gives a narrower bound
    at_plan = multiplier(PLANNED, PLANNED)
    assert all(multiplier(PLANNED, other) >= at_plan - 1e-12 for other in (50, 500, 2_000, 4_900, 5_100, 50_000, 10**6))
    assert multiplier(PLANNED, PLANNED) == pytest.approx(min(multiplier(PLANNED, p) for p in range(1_000, 20_000, 50)),
                                                         rel=1e-6)
    # the formula's closed form at the minimiser, a = 2 alpha
    x = tightest_x(0.05)
    assert at_plan == pytest.approx(math.sqrt((1 + x) * math.log((1 + x) / (x * 0.1**2))))


def test_far_beyond_the_plan_the_multiplier_grows_like_sqrt_log_n():
    # the price of looking forever: the ratio to sqrt(log n) settles while the multiplier itself keeps growing
    far = [multiplier(n, PLANNED) for n in (10**8, 10**10, 10**12)]
    assert far[0] < far[1] < far[2]
    ratios = [m / math.sqrt(math.log(n)) for m, n in zip(far, (10**8, 10**10, 10**12))]
    assert ratios[2] == pytest.approx(ratios[1], rel=0.05)
    assert ratios[2] == pytest.approx(math.sqrt(1.0), abs=0.25)  # (1 + x) log(1/x) ~ log n as x -> 0


def test_no_units_means_no_bound_and_bad_levels_are_refused():
    assert multiplier(0, PLANNED) == math.inf
    with pytest.raises(DataError, match="alpha"):
        multiplier(10, PLANNED, alpha=0.7)
    with pytest.raises(DataError, match="planned_n"):
        multiplier(10, 0)


RULE = GuardrailRule(metric="unsubscribes", goal="decrease", max_harm=0.1, control_mean=0.2)


def test_the_verdict_is_the_guardrail_rules_test_with_the_always_valid_multiplier():
    control, n = _mean(0.2, 0.004, 5_000), 5_000
    fixed = harm_of(RULE, _mean(0.2 * 1.12, 0.004, n), control)
    got = sequential_harm(RULE, _mean(0.2 * 1.12, 0.004, n), control, planned_n=PLANNED)
    # same estimate, se and limit as the fixed rule; only the multiplier differs
    assert (got.estimate, got.se, got.limit) == pytest.approx((fixed.estimate, fixed.se, fixed.limit))
    assert got.upper - got.estimate == pytest.approx(multiplier(n, PLANNED) * fixed.se)
    assert got.z == pytest.approx((fixed.estimate - fixed.limit) / fixed.se)
    assert got.multiplier > z_value()
    cases = {0.0: "pass", 0.1: "inconclusive", 0.35: "fail"}
    for harm, verdict in cases.items():
        h = sequential_harm(RULE, _mean(0.2 * (1 + harm), 0.004, n), control, planned_n=PLANNED)
        assert h.verdict == verdict, (harm, h)
    # a harm the fixed one-sided bound already calls beyond the limit, but not significantly at every look
    borderline = _mean(0.2 * 1.16, 0.004, n)  # z = 2.02: beyond 1.645, within 2.76
    assert harm_of(RULE, borderline, control).verdict == "fail"
    assert sequential_harm(RULE, borderline, control, planned_n=PLANNED).verdict == "inconclusive"


def test_no_spread_is_inconclusive_and_the_json_has_no_infinities():
    h = sequential_harm(RULE, _mean(0.3, 0.0, 0), _mean(0.2, 0.0, 0), planned_n=PLANNED)
    assert h.verdict == "inconclusive"
    d = h.to_dict()
    assert d["lower"] is None and d["upper"] is None and d["metric"] == "unsubscribes"
