"""Offline vs online at `pex online complete`: each measured arm's live lift and harm against the offline estimate
that put it in the round (pex.services.online.offline_agreement), stored with the round and shown by its status."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest

from pex.report.online import status_text
from pex.services import online
from pex.services.policies import load_fit
from pex.store.workspace import Workspace
from tests.online.test_online import _traffic


def test_online_complete_compares_each_arm_with_its_offline_estimate(tmp_path, serving_home):
    shutil.copytree(serving_home, tmp_path / "ws")
    with Workspace(tmp_path / "ws") as ws:
        started = online.start_loop(ws, "exp", online.LoopOptions(arms=2, seed=1, from_offline=True))
        arms = started["rounds"][0]["arms"]
        offline_arms = [a for a in arms if a.get("offline")]
        assert offline_arms, "the offline search gave round 1 no candidate"
        # the stored spread is of the very quantity the search reported: its mean is the search's objective
        problem = online._problem(load_fit(ws, "exp"), 0.05)
        for a in offline_arms:
            ev = a["offline"]
            assert set(ev["objective_se"]) == set(ev["objectives"]) and all(v > 0 for v in ev["objective_se"].values())
            got = problem.evaluate(np.atleast_2d(a["point"]))
            assert ev["objectives"] == pytest.approx(dict(zip(problem.objectives, got["objectives"][0])))
            assert ev["guardrail_harm"] == pytest.approx(dict(zip(problem.rules, got["harms"][0])))
        _traffic(ws, 3_000, seed=11)
        done = online.complete_round(ws, "exp")
    results = done["rounds"][0]["results"]["arms"]
    for a in arms:
        if a["role"] == "holdout":
            assert "agreement" not in results[a["route"]]
            continue
        agreement = results[a["route"]]["agreement"]
        if not a.get("offline"):
            assert agreement == {"available": False, "why": "no offline estimate: an Ax proposal", "metrics": {}}
            continue
        assert agreement["available"] and set(agreement["metrics"]) == {"sessions", "converted", "unsubscribes"}
        lift = agreement["metrics"]["sessions"]
        live = results[a["route"]]["metrics"]["sessions"]["lift"]
        assert lift["kind"] == "lift" and lift["online_estimate"] == pytest.approx(live["estimate"])  # sessions: increase
        assert lift["offline_estimate"] == a["offline"]["objectives"]["sessions"]
        expected = (live["estimate"] - a["offline"]["objectives"]["sessions"]) / math.hypot(
            live["se"], a["offline"]["objective_se"]["sessions"])
        assert lift["z"] == pytest.approx(expected) and lift["flag"] == (abs(expected) > 2.5758)
        harm = agreement["metrics"]["unsubscribes"]
        assert harm["kind"] == "harm" and harm["online_estimate"] == results[a["route"]]["harms"]["unsubscribes"]["estimate"]
        assert agreement["flagged"] == sorted(m for m, x in agreement["metrics"].items() if x["flag"])
    text = status_text(done)
    assert text.count("live vs offline: sessions lift") == len(offline_arms)

    # `pex check` raises one offline_online_disagreement per flagged metric of each arm of the serving round
    from pex.services import checks

    with Workspace(tmp_path / "ws") as ws:
        fired = [a for a in checks.check(ws, "exp").alerts if a.rule == "offline_online_disagreement"]
    flagged = sorted((a["route"], m) for a in arms if a["role"] != "holdout"
                     for m in results[a["route"]]["agreement"].get("flagged", []))
    assert sorted((next(r for r, _m in flagged if r in al.message), al.figures["name"]) for al in fired) == flagged
    assert all(al.policy == done["policy"] and "online round 1" in al.message for al in fired)
