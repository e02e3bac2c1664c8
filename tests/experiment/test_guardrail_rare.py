"""The guardrail rule on rare events, against known truth: a randomized two-arm experiment with a binary guardrail,
the harm of treating everyone measured as pex measures it (doubly-robust contributions of the policy and of
all-control on the same units, the control mean estimated there, :meth:`GuardrailRule.assess`).

The old rule (delta method on d / c) passed a guardrail whose true harm sat exactly at the limit 6.2% of the time at
about 240 control events and 10.3% at 10; Fieller's test at the limit must stay within the 5% it states.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from pex.evaluation.estimators import DoublyRobust
from pex.experiment.guardrail import GuardrailRule, Harm, z_value

BASE_RATE = 0.03  # the control arm's event rate (a complaint, an unsubscribe)
MAX_HARM = 0.05  # relative: the policy may raise the rate by at most 5%
CONTROL = np.column_stack([np.ones(1), np.zeros(1)])  # all-control's action distribution (one row, broadcast below)


def _experiments(reps: int, n: int, harm: float, seed: int, base: float = BASE_RATE) -> tuple[np.ndarray, np.ndarray]:
    """``reps`` randomized experiments of ``n`` units at once (assignment 50/50): arm index and binary outcome, the
    treated arm's rate being ``base * (1 + harm)``."""
    rng = np.random.default_rng(seed)
    action = (rng.random((reps, n)) < 0.5).astype(int)
    outcome = (rng.random((reps, n)) < np.where(action == 1, base * (1 + harm), base)).astype(float)
    return action, outcome


def _reward_hat(action: np.ndarray, outcome: np.ndarray, seed: int) -> np.ndarray:
    """Cross-fitted reward models for every experiment at once, shape (reps, n, 2): each unit gets the arm means of
    the other fold (two folds), as a reward model that never saw the unit would give."""
    fold = np.random.default_rng(seed + 1).random(action.shape) < 0.5
    out = np.empty((*action.shape, 2))
    for f in (True, False):
        train = fold != f
        for arm in (0, 1):
            mine = train & (action == arm)
            mean = (outcome * mine).sum(axis=1) / np.maximum(mine.sum(axis=1), 1)
            out[..., arm] = np.where(fold == f, mean[:, None], out[..., arm])
    return out


def _harms(reps: int, n: int, harm: float, seed: int, base: float = BASE_RATE) -> tuple[list[Harm], np.ndarray, np.ndarray]:
    """The rule's verdict on treating everyone in each of ``reps`` experiments, the delta method's pass (the old rule,
    for comparison) and each experiment's control events (drawn a block of experiments at a time, to bound memory)."""
    dr = DoublyRobust()
    pscore = np.full(n, 0.5)
    treat, control = np.repeat(CONTROL[:, ::-1], n, axis=0), np.repeat(CONTROL, n, axis=0)
    harms, delta, events = [], [], []
    block = max(1, 2_000_000 // n)
    for start in range(0, reps, block):
        action, outcome = _experiments(min(block, reps - start), n, harm, seed + 7_919 * start, base)
        reward_hat = _reward_hat(action, outcome, seed + 7_919 * start)
        counts = (outcome * (action == 0)).sum(axis=1)
        for r in range(len(action)):
            mine = dr.estimate(outcome[r], action[r], pscore, treat, reward_hat[r]).contributions
            base_c = dr.estimate(outcome[r], action[r], pscore, control, reward_hat[r]).contributions
            rule = GuardrailRule("complaints", "decrease", MAX_HARM, control_mean=float(base_c.mean()))
            harms.append(rule.assess(mine - base_c, base_c, control_events=float(counts[r])))
            delta.append(_delta_method_passes(mine - base_c, base_c))
        events.append(counts)
    return harms, np.array(delta), np.concatenate(events)


def _delta_method_passes(change: np.ndarray, control: np.ndarray) -> bool:
    """The rule before Fieller's test: d / c with the delta method's standard error, at the same level."""
    d, c = change.mean(), control.mean()
    if c == 0:
        return False
    influence = change / c - d * control / c**2
    return bool(d / c + z_value() * influence.std(ddof=1) / math.sqrt(len(change)) <= MAX_HARM)


def test_the_bound_is_calibrated_at_the_limit_and_certifies_a_safe_policy():
    """With the true harm at the limit (about 240 control events), (estimate - limit) / se is close to a standard
    normal and the bound passes about 5% of the time; with the true harm 20 points under the limit and ten times the
    events it passes nearly always, and every verdict is the one-sided bound against the limit."""
    harms, _delta, events = _harms(300, 16_000, MAX_HARM, seed=1)
    assert 200 < events.mean() < 280
    t = np.array([(h.estimate - h.limit) / h.se for h in harms])
    assert abs(t.mean()) < 0.2 and 0.85 < t.std() < 1.15
    assert np.mean([h.passed for h in harms]) <= 0.09
    assert all(h.passed == (h.estimate + z_value() * h.se <= h.limit) and h.control_events >= 0 for h in harms)
    safe, _, _ = _harms(40, 160_000, MAX_HARM - 0.20, seed=2)
    assert np.mean([h.passed for h in safe]) >= 0.9
    assert not any(h.few_events for h in safe)


def test_few_control_events_are_flagged():
    harms, _, events = _harms(20, 1_000, 0.0, seed=3)  # about 15 control events each
    assert all(h.few_events for h in harms) and all(h.control_events == e for h, e in zip(harms, events))
    assert Harm.from_dict(harms[0].to_dict()).control_events == harms[0].control_events


def test_units_to_certify_gives_80_percent_power():
    """The units a pilot says are needed at 80% power, if the harm (here the truth) and the spread stay as the pilot
    measured them: experiments of that size pass about 80% of the time (70-90% over 600 of them)."""
    truth = -0.10
    pilot, _, _ = _harms(1, 400_000, truth, seed=4, base=0.1)
    rule = GuardrailRule("complaints", "decrease", MAX_HARM, control_mean=0.1)
    planned = rule.verdict(truth, pilot[0].se, n=pilot[0].n)
    need = planned.units_to_certify()
    assert 2_000 < need < 100_000, need
    at_half = planned.units_to_certify(power=0.5)
    runs, _, _ = _harms(600, need, truth, seed=5, base=0.1)
    rate = np.mean([h.passed for h in runs])
    print(f"\nunits to certify at 80% power: {need:,} (at 50%: {at_half:,}); pass rate at that size {rate:.3f}")
    assert 0.70 <= rate <= 0.90
    halves, _, _ = _harms(600, at_half, truth, seed=6, base=0.1)
    assert 0.40 <= np.mean([h.passed for h in halves]) <= 0.60  # the old figure: a coin flip


# -- slow: the false-pass rate at the limit, rare events ------------------------------------------------------------

LEVELS = (10, 20, 50, 240)  # control events per experiment, about
REPLICATIONS = 2_000


@pytest.mark.slow
def test_false_pass_rate_at_the_limit_with_rare_events():
    """2,000 experiments at each of about 10, 20, 50 and 240 control events, the true harm exactly at the limit: the
    rule certifies at most 5.5% of them at each (the delta method, printed for comparison, certified 8-11%)."""
    rates, old = {}, {}
    for i, events in enumerate(LEVELS):
        n = 2 * round(events / BASE_RATE)
        harms, delta, counted = _harms(REPLICATIONS, n, MAX_HARM, seed=100 + i)
        assert abs(counted.mean() / events - 1) < 0.05
        rates[events] = float(np.mean([h.passed for h in harms]))
        old[events] = float(delta.mean())
    print("\nfalse-pass rate at the limit, by control events: "
          + ", ".join(f"{e}: {rates[e]:.2%} (delta method {old[e]:.2%})" for e in LEVELS))
    assert all(rate <= 0.055 for rate in rates.values()), rates
    assert old[10] > 0.07  # the same replications catch the old rule's excess: the test can fail
