"""The loop's error control over rounds, on synthetic rounds measured by the engine's own code path.

Each round is synthetic per-unit logged feedback (a holdout of all-control and candidate arms of always-treat, all
with the loop's exploration and the logged propensities) measured by :func:`pex.online.lifts.measure_round` and
judged by :func:`pex.online.choice.choose_best` at the round's share of the budget (:mod:`pex.online.spending`),
exactly as ``pex online complete`` does, without a server or a store: 700 loops of 6 rounds take about 2-4 minutes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.proportion import proportion_confint

from pex.evaluation.estimators import Estimate
from pex.experiment.guardrail import GuardrailRule
from pex.experiment.spec import MetricSpec
from pex.online.choice import choose_best
from pex.online.lifts import harm_of, measure_round
from pex.online.spending import AlphaSpending
from pex.policy.constant import constant_policy
from pex.policy.routing import routing_policy

ARMS = ["control", "treat"]
EXPLORATION = 0.05
SERVED = 1 - EXPLORATION + EXPLORATION / len(ARMS)  # the chance an arm's own choice is what a unit gets
LIMIT = 0.05
CONTROL_RATE = 0.2  # the guardrail's event rate under control: hundreds of events per arm, so the normal bound holds
METRICS = {"y": MetricSpec("y", "y", "increase", "primary", None, None),
           "g": MetricSpec("g", "g", "decrease", "guardrail", None, LIMIT)}
RULES = {"g": GuardrailRule("g", "decrease", LIMIT, control_mean=CONTROL_RATE)}
GOALS = {"y": 1.0}


@dataclass
class _Round:
    round: int
    status: str
    arms: list
    results: dict


def synthetic_round(rng: np.random.Generator, number: int, champion: str | None, *, candidates: int = 4,
                    units_per_arm: int = 4_000, harm: float = LIMIT, gain: float = 1.0) -> _Round:
    """Round ``number`` measured: a holdout and ``candidates`` arms (the champion's route among them, if any), each
    arm's served harm exactly ``harm`` and its primary gain over control ``gain`` x the served share."""
    names = [f"r{number}-a{i}" for i in range(1, candidates + 1 - (champion is not None))]
    names += [champion] if champion is not None else []
    holdout = constant_policy(ARMS, "control", EXPLORATION, name=f"r{number}-hold")
    policies = [holdout] + [constant_policy(ARMS, "treat", EXPLORATION, name=n) for n in names]
    share = 1.0 / len(policies)
    routing = routing_policy("loop", [(i * share, share, p) for i, p in enumerate(policies)], key="0123456789abcdef",
                             unit="unit", experiment="x")
    # the treated rate that puts the arm as served (exploration included) at ``harm`` over all-control
    treated_rate = CONTROL_RATE * (1 + harm / SERVED)
    frames = []
    for p in policies:
        own = SERVED if p.default_arm == "treat" else 1 - SERVED
        treated = rng.uniform(size=units_per_arm) < own
        frames.append({"route": np.full(units_per_arm, p.name), "arm": np.where(treated, "treat", "control"),
                       "propensity": np.where(treated, own, 1 - own),
                       "y": rng.normal(gain * treated, 1.0),
                       "g": (rng.uniform(size=units_per_arm) < np.where(treated, treated_rate, CONTROL_RATE)).astype(float)})
    frame = pd.DataFrame({k: np.concatenate([f[k] for f in frames]) for k in frames[0]})
    results = measure_round(frame, routing, holdout.name, "control", METRICS, RULES)
    arms = [{"route": holdout.name, "role": "holdout", "policy": holdout.name, "version": 1}]
    arms += [{"route": n, "role": "champion" if n == champion else "candidate", "policy": n, "version": 1} for n in names]
    return _Round(number, "complete", arms, results)


def run_loops(loops: int, round_alpha: Callable[[int], float], seed: int, rounds: int = 6) -> dict[str, int]:
    """``loops`` loops of ``rounds`` rounds, round ``r`` judged at ``round_alpha(r)``; how many promoted a pick at
    some round (``picked``) and how many certified some arm at some round (``certified``: the certified front)."""
    rng = np.random.default_rng(seed)
    picked = certified = 0
    for _ in range(loops):
        champion, any_pick, any_certified, played = None, False, False, []
        for number in range(1, rounds + 1):
            played.append(synthetic_round(rng, number, champion))
            best = choose_best(played, GOALS, "y", round_alpha)  # replayed, as `pex online` does
            any_certified |= any(r["certified"] for r in best["arms"])
            if best["chosen"] is not None:
                any_pick, champion = True, best["chosen"]["route"]
        picked += any_pick
        certified += any_certified
    return {"loops": loops, "picked": picked, "certified": certified}


def _rate(count: int, n: int) -> str:
    low, high = proportion_confint(count, n, alpha=0.05, method="wilson")
    return f"{count / n:.1%} [{low:.1%}, {high:.1%}]"


def test_the_harness_certifies_safe_arms_and_measures_their_gain():
    """Not vacuous: arms truly well inside the limit are certified and picked in round 1 at the spent level."""
    rng = np.random.default_rng(3)
    plan = AlphaSpending(rounds=6)
    best = choose_best([synthetic_round(rng, 1, None, harm=-0.2)], GOALS, "y", plan.round_alpha(1))
    assert best["code"] == "picked" and all(r["certified"] for r in best["arms"])
    assert best["level"] == pytest.approx(1 - 0.05 / 6 / 4)
    for row in best["arms"]:
        assert abs(row["gain"] - SERVED) < 4 * row["gain_se"]  # y rises by 1 for each treated unit
    # at the limit the arms are rarely certified; the champion of round 2 is compared with the challengers
    second = choose_best([synthetic_round(rng, 2, best["chosen"]["route"], harm=-0.2)], GOALS, "y", plan.round_alpha(2))
    assert second["code"] == "kept_champion" or second["params"]["chosen"]["versus_champion"]["lower"] > 0
    assert sum(r["versus_champion"] is not None for r in second["arms"]) == 3


def test_a_rounds_harm_bound_holds_its_level_deep_in_the_tail():
    """With the arm truly at its limit, the share of rounds whose bound passes is the level, at the level a 6-round
    budget over 4 arms judges an arm at (0.05 / 24): the delta method on v / c - 1 let 0.35% through there."""
    rng = np.random.default_rng(5)
    draws, alpha = 20_000, 0.05 / 24
    n_control, n_arm = 3_900, 4_000
    arm_rate = CONTROL_RATE * (1 + LIMIT)
    c = rng.binomial(n_control, CONTROL_RATE, draws) / n_control
    v = rng.binomial(n_arm, arm_rate, draws) / n_arm
    passed = 0
    for ci, vi in zip(c, v):
        control = Estimate("snips", ci, (ci * (1 - ci) / n_control) ** 0.5, 0.0, 0.0, n_control, np.zeros(0))
        value = Estimate("snips", vi, (vi * (1 - vi) / n_arm) ** 0.5, 0.0, 0.0, n_arm, np.zeros(0))
        passed += harm_of(RULES["g"], value, control, alpha).passed
    low, high = proportion_confint(passed, draws, alpha=0.01, method="wilson")
    assert low <= alpha <= high, (passed / draws, low, high)


@pytest.mark.slow
def test_six_rounds_with_every_arm_at_its_limit_promote_a_falsely_certified_pick_in_at_most_5pct_of_loops():
    """500 loops of 6 rounds of 4 arms, every arm truly at its guardrail limit, so any pick is falsely certified.
    The loop's budget spent over its rounds keeps the share of loops with such a pick within 5%; each round spending
    the whole 5% again (the rule before the budget) does not."""
    loops = 500
    spent = run_loops(loops, AlphaSpending(rounds=6).round_alpha, seed=2026)
    again = run_loops(200, lambda number: 0.05, seed=2027)
    print(f"\nbudget over 6 rounds: a falsely certified pick in {_rate(spent['picked'], loops)} of loops, a falsely "
          f"certified arm (the front) in {_rate(spent['certified'], loops)}; 5% in every round: a falsely certified "
          f"pick in {_rate(again['picked'], 200)}")
    assert _within(spent["picked"], loops) and _within(spent["certified"], loops), spent
    assert proportion_confint(again["picked"], 200, method="wilson")[0] > 0.05, again  # the harness sees a breach


def _within(count: int, n: int, alpha: float = 0.05) -> bool:
    """At most ``alpha``, or not distinguishable from it (the Wilson 95% interval reaches it): the budget's bound is
    nearly tight for independent arms, so the observed share of 500 loops falls either side of 5% by chance."""
    return count / n <= alpha or proportion_confint(count, n, alpha=0.05, method="wilson")[0] <= alpha
