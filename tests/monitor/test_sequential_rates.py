"""The sequential guardrail rule's false-alarm rate and power, over simulated canaries watched after every batch.

A binary guardrail (control rate 0.2, goal decrease, ``max_harm`` 0.15 relative) with known means; each canary
gets 20 batches of 250 units per arm (canary and all-control holdout), and after every batch the rule judges the
cumulative data, as the watcher does. Three versions:

* harmless (true harm 0), the issue's case: rollback in at most 5% of canaries;
* at the limit (true harm exactly ``max_harm``): the worst case a rollback must still tolerate, where the
  fixed one-sided 95% bound checked after every batch fires far more often than 5% and the sequential one
  stays within it (the inflation the always-valid bound avoids);
* twice the allowed harm: the rule's power, and the batch it rolls back at.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from pex.evaluation.estimators import Estimate
from pex.experiment.guardrail import GuardrailRule
from pex.monitor.sequential import sequential_harm
from pex.online.lifts import harm_of

CANARIES, BATCHES, BATCH = 200, 20, 250
P0, MAX_HARM = 0.2, 0.15
RULE = GuardrailRule(metric="unsubscribes", goal="decrease", max_harm=MAX_HARM, control_mean=P0)
EMPTY = np.zeros(0)
EMPTY.setflags(write=False)


def _estimate(events: float, n: int) -> Estimate:
    mean = events / n
    se = math.sqrt(mean * (1.0 - mean) / (n - 1))  # the sample standard deviation over sqrt(n), as SNIPS gives it
    return Estimate("snips", mean, se, mean - 1.96 * se, mean + 1.96 * se, n, EMPTY)


def _wilson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    z = float(stats.norm.ppf(0.5 + level / 2))
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def _watch(true_harm: float, seed: int) -> dict:
    """Per canary, the first batch (1-based) each rule rolls back at, or 0 when it never does."""
    rng = np.random.default_rng(seed)
    p1 = P0 * (1.0 + true_harm)
    canary = rng.binomial(BATCH, p1, size=(CANARIES, BATCHES)).cumsum(axis=1)
    control = rng.binomial(BATCH, P0, size=(CANARIES, BATCHES)).cumsum(axis=1)
    first = {"sequential": np.zeros(CANARIES, dtype=int), "fixed_every_batch": np.zeros(CANARIES, dtype=int),
             "fixed_at_end": np.zeros(CANARIES, dtype=int)}
    for i in range(CANARIES):
        for b in range(BATCHES):
            n = BATCH * (b + 1)
            value, base = _estimate(canary[i, b], n), _estimate(control[i, b], n)
            if not first["sequential"][i] and sequential_harm(RULE, value, base, planned_n=BATCH * BATCHES).verdict == "fail":
                first["sequential"][i] = b + 1
            fixed = harm_of(RULE, value, base).verdict == "fail"
            if not first["fixed_every_batch"][i] and fixed:
                first["fixed_every_batch"][i] = b + 1
            if b == BATCHES - 1 and fixed:
                first["fixed_at_end"][i] = b + 1
    return first


def _rates(first: dict) -> dict:
    out = {}
    for rule, at in first.items():
        k = int((at > 0).sum())
        out[rule] = {"rate": k / CANARIES, "wilson95": _wilson(k, CANARIES),
                     "median_batch": float(np.median(at[at > 0])) if k else None}
    return out


@pytest.mark.slow
def test_sequential_rollback_rates_on_harmless_at_the_limit_and_harmful_canaries():
    harmless, at_limit, harmful = _rates(_watch(0.0, 1)), _rates(_watch(MAX_HARM, 2)), _rates(_watch(2 * MAX_HARM, 3))
    for name, r in (("harmless (harm 0)", harmless), ("at the limit", at_limit), ("twice the limit", harmful)):
        print(name, {k: (v["rate"], tuple(round(x, 3) for x in v["wilson95"]), v["median_batch"]) for k, v in r.items()})
    # the claim: a harmless version is rolled back in at most 5% of canaries
    assert harmless["sequential"]["rate"] <= 0.05
    # and the worst harmless case: true harm exactly max_harm, still tolerated at every look
    assert at_limit["sequential"]["rate"] <= 0.05
    # the fixed 95% bound checked after every batch inflates its 5% (its Wilson interval is above 5%)
    assert at_limit["fixed_every_batch"]["wilson95"][0] > 0.05
    assert at_limit["fixed_every_batch"]["rate"] > 2 * at_limit["sequential"]["rate"]
    # power on twice the allowed harm (0.76 at seed 3; its z at the last batch is about 3.3 against a multiplier of
    # 2.76), mostly before the last batch; the price of looking at every batch against the fixed bound's 0.94 at the end
    assert harmful["sequential"]["rate"] >= 0.6
    assert harmful["sequential"]["median_batch"] < BATCHES
