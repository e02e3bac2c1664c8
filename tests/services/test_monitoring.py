"""`pex monitor` on a workspace with a fitted, published policy and logged decisions: drift, arms, staleness, gauges."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from pex.cli.main import main
from pex.errors import NotFoundError
from pex.monitor.drift import PROFILE_FILE
from pex.policy.base import Policy
from pex.services.models import effect_model_by_id
from pex.services.monitoring import latest_reports, monitor, staleness
from pex.store.workspace import Workspace
from tests.served import decision_rows, live_units


def _log(ws: Workspace, name: str, n: int = 600, seed: int = 5, shift: str | None = None) -> Policy:
    """Decisions of live policy ``name`` for ``n`` fresh units, as its server logs them (the policy's features only);
    ``shift``: that numeric feature moved by one standard deviation of the training data."""
    record = ws.get_policy(name)
    policy = Policy.from_document(record.document, lambda vm: effect_model_by_id(ws, vm["fit"]))
    frame = live_units(n, seed).data
    if shift is not None:
        frame[shift] = frame[shift] + ws.load_dataset("exp")[0].frame[shift].std()
    ws.append_decisions(decision_rows(policy, frame, policy.features, at=datetime.now(UTC)))
    return policy


def test_a_live_policy_report_has_every_feature_its_arms_and_fresh_ages(served):
    with Workspace(served.home) as ws:
        policy = _log(ws, served.value)
        report = monitor(ws, served.value)
        assert report["decisions"] == 600 and report["version"] == ws.live_versions()[served.value]
        rows = {r["feature"]: r for r in report["drift"]["features"]}
        assert set(rows) == set(ws.load_dataset("exp")[0].features)  # every training feature has a row
        read = [f for f in rows if f in policy.features]
        assert read and all(rows[f]["verdict"] == "ok" for f in read), rows  # the same population: no drift
        assert all(rows[f]["verdict"] == "not logged" for f in set(rows) - set(policy.features))
        assert report["drift"]["drifted"] == [] and report["notes"] == []
        arms = report["arms"]
        assert sum(arms["expected"].values()) == pytest.approx(1.0) and not arms["flag"]
        assert arms["psi"] < 0.05  # served decisions of this very policy on the same population
        assert report["staleness"]["stale"] is False and report["staleness"]["policy_age_days"] < 1
        assert ws.latest_monitor_report(served.value)["id"] == report["id"]
        assert set(latest_reports(ws)) == {served.value}


def test_a_shifted_feature_drifts_and_old_policies_are_stale(served):
    with Workspace(served.home) as ws:
        policy = _log(ws, served.value, shift="tenure_days")
        assert "tenure_days" in policy.features
        report = monitor(ws, served.value, store=False)
        assert report["drift"]["drifted"] == ["tenure_days"]
        assert ws.latest_monitor_report(served.value) is None  # store=False keeps nothing
        later = datetime.now(UTC) + timedelta(days=31)
        old = monitor(ws, served.value, store=False, now=later)["staleness"]
        assert old["stale"] and old["why"] == ["policy", "data"] and old["policy_age_days"] > 30
        assert staleness(ws, "exp", now=later)["stale"] is True
        assert staleness(ws, "exp")["stale"] is False
        with pytest.raises(NotFoundError, match="not live"):
            monitor(ws, "no-such-policy")
        fit, _summary = ws.find_fit(ws.get_policy(served.value).fit_id)
        (ws.artifacts / fit.artifact / PROFILE_FILE).unlink()  # a fit from before profiles existed
        old = monitor(ws, served.value, store=False)
        assert old["notes"] == ["no training profile: refit (`pex fit exp`) to monitor drift"]
        assert old["drift"]["features"] == [] and old["arms"]["expected"] and old["staleness"]["stale"] is False


def test_pex_monitor_json_and_text_then_metrics_gauges_and_the_stale_column(served, capsys):
    from web import create_app

    with Workspace(served.home) as ws:
        _log(ws, served.value, n=300)
    capsys.readouterr()
    assert main(["--home", str(served.home), "monitor", served.value, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["policy"] == served.value and report["staleness"]["stale"] is False
    assert main(["--home", str(served.home), "monitor", served.value]) == 0
    text = capsys.readouterr().out
    assert f"{served.value} v" in text and "300 decisions" in text and "fresh" in text
    assert main(["--home", str(served.home), "monitor", "nope"]) == 2
    assert "not live" in capsys.readouterr().err
    assert main(["--home", str(served.home), "experiments", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["stale"] is False

    app = create_app({"HOME": str(served.home)})
    try:
        metrics = app.test_client().get("/metrics", headers=served.headers("admin")).data.decode()
    finally:
        app.extensions["pex"].close()
    feature = next(r for r in report["drift"]["features"] if r["psi"] is not None)["feature"]
    assert f'pex_drift_psi{{feature="{feature}",policy="{served.value}"}}' in metrics
    assert f'pex_drift_flag{{feature="{feature}",policy="{served.value}"}} 0.0' in metrics
    assert f'pex_policy_stale{{policy="{served.value}"}} 0.0' in metrics
    assert f'pex_policy_age_days{{policy="{served.value}"}}' in metrics
    assert f'pex_monitor_report_age_seconds{{policy="{served.value}"}}' in metrics
    assert f'pex_policy_stale{{policy="{served.tree}"}}' not in metrics  # never monitored: no gauge


def test_pex_monitor_watch_ticks_until_interrupted(served, capsys, monkeypatch):
    import pex.cli.monitoring

    def interrupt(seconds: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(pex.cli.monitoring.time, "sleep", interrupt)
    assert main(["--home", str(served.home), "monitor", "--watch", "--every", "5"]) == 0
    out = capsys.readouterr()
    assert "0 running rollout(s) checked; reports refreshed: " in out.out and "stopped" in out.err
    with Workspace(served.home) as ws:  # the tick refreshed (stored) a report of every live policy
        assert set(latest_reports(ws)) == set(ws.live_versions())
