"""Logged feedback: the record off-policy estimators read, from a table or from the experiment's held-out units."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pex.errors import DataError
from pex.evaluation import estimators as ope
from pex.evaluation.feedback import LoggedFeedback

ARMS = ("control", "daily", "weekly")


def _table(n: int = 300, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"unit": [f"u{i}" for i in range(n)], "x": rng.normal(size=n),
                         "arm": rng.choice(ARMS, size=n), "p": np.full(n, 1 / 3), "y": rng.normal(size=n)})


def test_from_frame_gives_the_arrays_the_estimators_take():
    table = _table()
    fb = LoggedFeedback.from_frame(table, arms=ARMS, arm_column="arm", propensity_column="p", reward_columns={"sessions": "y"})
    assert fb.n == 300 and fb.arms == ARMS
    assert [ARMS[a] for a in fb.action] == list(table["arm"])
    np.testing.assert_array_equal(fb.rewards["sessions"], table["y"].to_numpy())
    # the uniform random policy's IPS value is the mean reward when the logging policy was uniform too
    uniform = np.full((fb.n, 3), 1 / 3)
    ips = ope.InverseProbabilityWeighting().estimate(fb.rewards["sessions"], fb.action, fb.pscore, uniform)
    assert ips.value == pytest.approx(table["y"].mean())


@pytest.mark.parametrize(("change", "message"), [
    (lambda t: t.assign(arm=t["arm"].where(t.index != 3, "hourly")), r"logged arm 'hourly' is not one of the arms"),
    (lambda t: t.assign(p=t["p"].where(t.index != 5, 0.0)), r"1 logged propensities are not probabilities in \(0, 1\]"),
    (lambda t: t.assign(p=t["p"].where(t.index != 5, np.nan)), r"not probabilities"),
    (lambda t: t.drop(columns="p"), r"needs column 'p'"),
])
def test_bad_feedback_is_refused_with_its_cause(change, message):
    with pytest.raises(DataError, match=message):
        LoggedFeedback.from_frame(change(_table()), arms=ARMS, arm_column="arm", propensity_column="p",
                                  reward_columns={"sessions": "y"})


def test_lengths_must_agree():
    table = _table(10)
    with pytest.raises(DataError, match="10 units but 9 values of pscore"):
        LoggedFeedback(context=table, arms=ARMS, action=np.zeros(10, dtype=int), pscore=np.full(9, 0.5),
                       rewards={"sessions": np.zeros(10)})
