"""Staged rollouts: a harmful canary is rolled back automatically, a good one ramps to complete, bad starts refused.

In process: a small ingested experiment, the rollout's own routing versions deciding simulated units (decisions
appended as a server would log them) and each unit's realised outcome under the arm it got, from the simulator's
truth (its expected outcomes, so that a few hundred units decide: the sequential rule's error rates under
noise are measured in tests/monitor). The guardrail is ``sessions`` with goal ``decrease`` (a rise is harm, 5% allowed): in the ``constant``
scenario ``daily`` raises sessions by 0.4 for everyone (about +7% of 5.6; the harmful test allows 1%); in ``null`` no arm
changes anything.
"""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from pex.cli.main import main
from pex.errors import DataError, PexError, UncertifiedError
from pex.experiment.simulate import simulate
from pex.policy.base import Policy
from pex.policy.constant import constant_policy
from pex.services import rollout
from pex.store.workspace import Workspace

NAME = "exp"
POLICY = "exp-live"
ARMS = ["control", "daily", "weekly"]
METRICS = {"converted": {"goal": "increase", "role": "primary", "kind": "binary"},
           "sessions": {"goal": "decrease", "role": "guardrail", "max_harm": 0.05, "pre": "sessions_pre",
                        "kind": "continuous"}}


@pytest.fixture
def ws(tmp_path, request):
    sim = simulate(1_000, seed=5, scenario="constant")
    max_harm = getattr(request, "param", METRICS["sessions"]["max_harm"])
    sim.metrics = {**METRICS, "sessions": {**METRICS["sessions"], "max_harm": max_harm}}
    spec = sim.write(tmp_path / "exp", name=NAME)
    home = tmp_path / "ws"
    assert main(["--home", str(home), "ingest", str(spec)]) == 0
    with Workspace(home) as opened:
        yield opened


def _store(ws: Workspace, arm: str) -> int:
    doc = constant_policy(ARMS, arm, 0.05, name=POLICY).replace(experiment=NAME).to_document()
    return ws.put_policies(NAME, [(doc, None)])[0].version


_batches = itertools.count()


def _serve(ws: Workspace, scenario: str, n: int) -> None:
    """``n`` fresh units decided by the live version of the rollout's policy, logged, with their expected outcomes
    under the arm each got."""
    batch = next(_batches)
    sim = simulate(n, seed=100 + batch, scenario=scenario)
    frame = sim.data.copy()
    frame["user_id"] = f"b{batch}-" + frame["user_id"].astype(str)
    version = ws.live_versions()[POLICY]
    policy = Policy.from_document(ws.get_policy(POLICY, version).document)
    arms, propensity = policy.decide(frame, frame["user_id"])
    routes = policy.route_names(frame["user_id"].tolist())
    at = datetime.now(UTC)
    features = ["age", "tenure_days", "country", "platform", "sessions_pre"]
    sent = frame[features].astype(object).where(frame[features].notna(), None).to_dict("records")
    ws.append_decisions([{"decision_id": uuid.uuid4().hex, "decided_at": at + timedelta(microseconds=i),
                          "experiment": NAME, "policy": POLICY, "version": version, "unit": u, "arm": a,
                          "propensity": float(p), "features": f, "route": r}
                         for i, (u, a, p, f, r) in enumerate(zip(frame["user_id"], arms, propensity, sent, routes))])
    index = np.asarray([sim.arms.index(a) for a in arms])
    records = []
    for m in METRICS:
        table = np.column_stack([sim.truth.expected[m][a] for a in sim.arms])
        records += [(u, m, float(v)) for u, v in zip(frame["user_id"], table[np.arange(n), index])]
    ws.put_outcomes(NAME, records)


@pytest.mark.parametrize("ws", [0.01], indirect=True)  # +7% against a 1% limit: beyond it by far
def test_a_harmful_canary_is_rolled_back_before_25_percent(ws, tmp_path, capsys):
    new = _store(ws, "daily")
    found = rollout.start(ws, POLICY, new, canary=0.05, ramp=[0.05, 0.25, 0.5, 1.0], holdout=0.2, min_outcomes=300,
                          force_reason="test: no run certified it")
    base = found["base_version"]
    assert found["status"] == "running" and found["live_version"] == found["versions"][0] != base
    assert ws.releases(POLICY)[0].note.startswith("all-control base")  # nothing was live: the base says why
    for _ in range(8):
        _serve(ws, "constant", 1_000)
        found = rollout.check(ws, POLICY)
        if found["status"] != "running":
            break
    assert found["status"] == "rolled_back" and found["step"] == 0  # never reached 25%
    assert ws.live_versions()[POLICY] == base
    last = ws.releases(POLICY)[-1]
    assert last.action == "auto-rollback" and last.actor == "watcher" and last.to_version == base
    assert "significantly beyond max_harm" in last.note
    harm = last.details["sequential"]["sessions"]
    assert last.details["action"]["code"] == "guardrail_beyond_limit"
    assert harm["lower"] > harm["limit"] == pytest.approx(0.01)
    assert 0.03 < harm["estimate"] < 0.2  # the truth: +0.4 sessions on a control mean near 5.6 (+7%)
    assert last.details["harms"]["sessions"]["verdict"] == "fail"  # the fixed one-sided bound agrees
    capsys.readouterr()
    assert main(["--home", str(tmp_path / "ws"), "rollout", "status", POLICY]) == 0
    text = capsys.readouterr().out
    assert "rolled_back at step 1 of 4" in text and "always-valid" in text and "guardrail_beyond_limit" in text
    # the step it left, with the figures it left it on (the release row's)
    assert f"auto-rollback on {last.details['outcomes']:,} canary outcomes" in text
    assert f"sessions harm {harm['estimate']:+.4g} (always-valid [{harm['lower']:+.4g}, {harm['upper']:+.4g}]" in text


@pytest.mark.slow  # about 20 s
def test_a_good_canary_ramps_step_by_step_to_complete(ws):
    base = _store(ws, "control")
    ws.publish(POLICY, base, "owner")
    new = _store(ws, "weekly")
    rollout.start(ws, POLICY, new, canary=0.1, ramp=[0.1, 0.5, 1.0], holdout=0.2, min_outcomes=300,
                  force_reason="test: no run certified it")
    seen = []
    for _ in range(12):
        _serve(ws, "null", 1_500)
        found = rollout.check(ws, POLICY)
        seen.append((found["step"], found["status"]))
        if found["status"] != "running":
            break
    assert found["status"] == "complete", seen
    assert ws.live_versions()[POLICY] == new  # the new version alone, the holdout gone
    actions = [r.action for r in ws.releases(POLICY)]
    assert actions[:2] == ["publish", "canary"] and actions[-1] == "complete"
    assert actions.count("ramp") == 2  # 10% -> 50% -> 100%, one release row per step
    for r in ws.releases(POLICY)[2:]:
        assert r.details["action"]["code"] == "certified" and r.details["sequential"]["sessions"]["verdict"] == "pass"
    steps = found["by_step"]
    assert [s["share"] for s in steps] == [0.1, 0.5, 1.0] and all(s["units"] > 0 for s in steps)


def test_refusals(ws):
    new = _store(ws, "daily")
    with pytest.raises(UncertifiedError, match="not certified"):
        rollout.start(ws, POLICY, new, canary=0.05, holdout=0.05)
    for bad, match in [(dict(canary=0.0, holdout=0.05), "canary share"),
                       (dict(canary=0.05, holdout=0.0), "holdout share"),
                       (dict(canary=0.05, holdout=0.05, ramp=[0.05, 0.5, 0.25, 1.0]), "increase"),
                       (dict(canary=0.05, holdout=0.05, ramp=[0.05, 0.5]), "end at 100%"),
                       (dict(canary=0.05, holdout=0.05, ramp=[0.05, 1.5]), "at most 100%")]:
        with pytest.raises(DataError, match=match):
            rollout.start(ws, POLICY, new, force_reason="test", **bad)
    rollout.start(ws, POLICY, new, canary=0.05, holdout=0.05, force_reason="test")
    with pytest.raises(PexError, match="already has a running rollout"):
        rollout.start(ws, POLICY, new, canary=0.05, holdout=0.05, force_reason="test")
    assert rollout.running(ws) == [POLICY]
    stopped = rollout.stop(ws, POLICY, actor="owner")
    assert stopped["status"] == "stopped" and ws.releases(POLICY)[-1].action == "rollback"
    other = ws.put_policies(NAME, [(constant_policy(["control", "daily"], "daily", 0.05, name=POLICY)
                                    .replace(experiment=NAME).to_document(), None)])[0].version
    with pytest.raises(PexError, match="arms"):
        rollout.start(ws, POLICY, other, canary=0.05, holdout=0.05, force_reason="test")
