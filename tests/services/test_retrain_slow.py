"""`pex retrain` end to end: a log of served units becomes a dataset version whose run certifies a policy, which
starts as a canary (never at 100%)."""

from __future__ import annotations

import json

import pytest

from pex.experiment.data import load_dataset
from pex.experiment.effects import analyze
from pex.experiment.simulate import simulate
from pex.experiment.spec import load_spec
from pex.services.retrain import LOG_SOURCE
from pex.store.workspace import Workspace
from tests.services.test_retrain import NAME, serve_log

pytestmark = pytest.mark.slow

LIVE = "shop-heavy"


def test_retrain_certifies_and_starts_a_canary(tmp_path, home, run):
    # the canary scenario: all-heavy is live (it slows pages 15%); lite lifts orders and keeps latency
    spec_path = simulate(300, scenario="canary", seed=0).write(tmp_path / "exp", NAME)
    with Workspace(home, create=True) as ws:
        ws.put_dataset(load_dataset(load_spec(spec_path)), source="shop.csv")
        fresh, _arms, _p = serve_log(ws, 5000, scenario="canary", arm="heavy", name=LIVE, exploration=0.5)

    out = run("retrain", NAME, "--policy", LIVE, "--canary", "5", "--holdout", "5", "--json")
    assert out.code == 0, out.err
    result = json.loads(out.out)
    assert result["dataset_version"]["version"] == 2 and result["dataset_version"]["source"].startswith(LOG_SOURCE)
    assert result["log"]["n_units"] == 5000 and result["log"]["policies"] == {f"{LIVE} v1": 5000}
    rec, canary = result["recommendation"], result["canary"]
    assert rec["certified"] and rec["verdict"] != "keep_control", rec
    assert canary["started"] and canary["policy"] == rec["policy"] and canary["canary"] == 0.05, canary

    with Workspace(home) as ws:
        dataset, dv = ws.load_dataset(NAME)
        assert dv.version == 2 and dataset.spec.propensity == "propensity"
        for e in analyze(dataset).effects:  # the retrained data's average effects against the truth
            assert abs(e.estimate - fresh.truth.ate(e.metric, e.arm)) < 3 * e.se, e
        # nothing went to all traffic: the recommended policy serves as a 5% canary routed beside its base
        live = ws.get_policy(rec["policy"], ws.live_versions()[rec["policy"]]).document
        assert live["kind"] == "routing"
        steps = [r for r in ws.releases(rec["policy"]) if r.action == "canary"]
        assert len(steps) == 1 and steps[0].details["share"] == 0.05 and steps[0].details["new_version"] == rec["version"]
        assert ws.releases(LIVE) == []  # the logging policy's own releases are untouched (it was never published here)
