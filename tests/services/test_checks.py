"""`pex check`: each rule fires on its condition and only then, every alert names the owner and on-call, the exit
code is 1 when anything fires, 0 with an "all clear" line when nothing does, 2 on a bad name."""

from __future__ import annotations

import shutil
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from prometheus_client import CollectorRegistry, Counter, generate_latest

from pex.cli.main import main
from pex.monitor import alerts
from pex.monitor.drift import drift, profile
from pex.services import checks
from pex.store.dead_letters import DeadLetterFile
from pex.store.workspace import Workspace


@pytest.fixture
def home(tmp_path, serving_home):
    """A private copy of small_run's workspace (experiment ``exp``, nothing published)."""
    shutil.copytree(serving_home, tmp_path / "ws")
    return tmp_path / "ws"


def _publish_value(home) -> tuple[str, int]:
    with Workspace(home, create=False) as ws:
        name = next(p.name for p in ws.list_policies("exp") if p.name.endswith("-value"))
        return name, ws.publish(name, None, "tests").to_version


def _decisions(policy: str, version: int, n: int, at: datetime) -> list[dict]:
    return [{"decision_id": uuid.uuid4().hex, "decided_at": at, "experiment": "exp", "policy": policy,
             "version": version, "unit": f"d{i}", "arm": "control", "propensity": 0.5, "features": {}, "route": None}
            for i in range(n)]


def _check(home, *args: str) -> tuple[int, str]:
    import io
    from contextlib import redirect_stdout

    out = io.StringIO()
    with redirect_stdout(out):
        code = main(["--home", str(home), "check", *args])
    return code, out.getvalue()


# -- the pure rules ---------------------------------------------------------------------------------------------


def _drift_report() -> dict:
    """A monitor-report-shaped dict whose drift section is pex.monitor.drift's verdict on served features where
    ``age`` shifted and ``country`` went missing in a third of the rows (the rest unchanged)."""
    rng = np.random.default_rng(5)
    n = 3000
    train = pd.DataFrame({"age": rng.normal(40, 10, n), "tenure": rng.exponential(100, n),
                          "country": rng.choice(["us", "de", "fr"], n)})
    served = pd.DataFrame({"age": rng.normal(55, 10, n), "tenure": rng.exponential(100, n),
                           "country": rng.choice(["us", "de", "fr"], n).astype(object)})
    served.loc[rng.random(n) < 0.33, "country"] = None
    prof = profile(train, ["age", "tenure", "country"], {"age": "numeric", "tenure": "numeric", "country": "categorical"})
    return {"drift": drift(prof, served)}


def test_drift_fires_once_per_drifted_feature_naming_it_and_its_figure():
    report = _drift_report()
    assert sorted(report["drift"]["drifted"]) == ["age", "country"]
    found = alerts.drift(report)
    assert [f.rule for f in found] == ["drift", "drift"]
    by_feature = {f.figures["feature"]: f.message for f in found}
    assert "PSI" in by_feature["age"] and "(limit 0.2)" in by_feature["age"]
    assert "missing in 3" in by_feature["country"] and "0.0% in training" in by_feature["country"]


def test_the_other_rules_fire_on_their_condition_only():
    now = datetime(2026, 12, 1, tzinfo=UTC)
    assert alerts.outcome_lag(0, 0) == [] and alerts.outcome_lag(10, 3) == []
    assert alerts.outcome_lag(10, 0)[0].rule == "outcome_lag"
    assert alerts.monitor_missing(now - timedelta(hours=23), now) == []
    assert "30 h old" in alerts.monitor_missing(now - timedelta(hours=30), now)[0].message
    assert alerts.monitor_missing(None, now)[0].rule == "monitor_missing"
    assert alerts.stale({"stale": False, "policy_age_days": 3, "data_age_days": 3, "max_age_days": 30}) == []
    old = alerts.stale({"stale": True, "policy_age_days": 3, "data_age_days": 41.2, "max_age_days": 30})
    assert old[0].message == "the data is 41 days old (max_age_days 30)"
    assert alerts.readiness({"ok": True}, 200) == []
    assert "policy p failed to load: gone" in alerts.readiness(
        {"ok": False, "store": "ok", "decision_log": "ok", "failed": {"p": "gone"}}, 503)[0].message
    assert alerts.decision_log_trouble({"ok": True, "decision_log": "ok"}) == []
    assert alerts.dead_letters(0) == [] and "4 decisions" in alerts.dead_letters(4)[0].message
    harms = [{"metric": "unsubscribes", "verdict": "pass", "estimate": 0.0, "lower": -0.01, "upper": 0.01,
              "limit": 0.02}, {"metric": "complaints", "verdict": "fail", "estimate": 0.09, "lower": 0.05,
                                "upper": 0.13, "limit": 0.02, "method": "mixture"}]
    assert [f.figures["metric"] for f in alerts.guardrail_harm(harms)] == ["complaints"]
    assert [f.figures["name"] for f in alerts.disagreement({"a": {"z": 1.0, "flag": False, "band": 0.99},
                                                            "b": {"z": 3.1, "flag": True, "band": 0.99}})] == ["b"]


def _metrics_text(ok: int, failed: int) -> str:
    registry = CollectorRegistry()
    requests = Counter("pex_http_requests", "requests", ["route", "method", "status"], registry=registry)
    requests.labels("/api/v1/policies/<name>/decide", "POST", "200").inc(ok)
    requests.labels("/api/v1/policies/<name>/decide", "POST", "503").inc(failed)
    requests.labels("/readyz", "GET", "200").inc(1)
    return generate_latest(registry).decode()


def test_error_rate_reads_the_request_counter_of_a_metrics_text():
    counts = alerts.response_counts(_metrics_text(989, 11))
    assert counts == {"total": 1001.0, "5xx": 11.0}
    assert alerts.error_rate(counts)[0].figures["share"] == pytest.approx(11 / 1001)
    assert alerts.error_rate(alerts.response_counts(_metrics_text(999, 9))) == []  # 0.9%
    assert alerts.error_rate({"total": 50.0, "5xx": 10.0}) == []  # too few responses to say


def test_every_alert_line_names_the_owner_and_oncall():
    alert = alerts.Alert("drift", "exp", "exp-value", "feature age drifted: PSI 0.5 (limit 0.2)", "growth", "pat")
    assert alert.to_line() == "drift exp exp-value: feature age drifted: PSI 0.5 (limit 0.2) (owner growth, on-call pat)"
    assert alerts.Alert("stale", "e", "p", "m").to_line().endswith("(owner no owner set, on-call no on-call set)")
    assert set(alerts.RULES) == {"not_ready", "error_rate", "decision_log_backlog", "outcome_lag", "drift", "stale",
                                 "guardrail_harm", "offline_online_disagreement", "monitor_missing"}


# -- over a workspace -------------------------------------------------------------------------------------------


def test_nothing_live_is_all_clear_and_a_bad_name_exits_2(home, capsys):
    code, out = _check(home)
    assert code == 0 and out.strip().splitlines()[-1].startswith("all clear")
    assert _check(home, "exp")[0] == 0
    assert _check(home, "no-such-experiment")[0] == 2
    assert "no experiment or live policy named 'no-such-experiment'" in capsys.readouterr().err


def test_outcome_lag_and_dead_letters_fire_for_the_live_policy_with_its_owner(home):
    name, version = _publish_value(home)
    now = datetime.now(UTC)
    with Workspace(home, create=False) as ws:
        ws.append_decisions(_decisions(name, version, 30, now - timedelta(hours=1)))
        lag = [a for a in checks.run_checks(ws) if a.rule == "outcome_lag"]
        assert [(a.experiment, a.policy) for a in lag] == [("exp", name)]
        assert "30 decisions in the last 24 h" in lag[0].message
        assert lag[0].owner == (ws.list_experiments()[0]["owner"] or alerts.NO_OWNER)
        assert lag[0].oncall == alerts.NO_ONCALL
        ws.put_outcomes("exp", [(f"d{i}", "sessions", 1.0) for i in range(5)])
        assert [a for a in checks.run_checks(ws) if a.rule == "outcome_lag"] == []
    DeadLetterFile(home).write(_decisions(name, version, 3, now), "the store refused the row")
    code, out = _check(home, name)
    lines = [line for line in out.splitlines() if line.startswith("decision_log_backlog")]
    assert code == 1 and lines == [f"decision_log_backlog exp {name}: 3 decisions are in dead-letter files, not in "
                                   f"the decision log (owner {lag[0].owner}, "
                                   f"on-call {alerts.NO_ONCALL})"]


# -- a real server --------------------------------------------------------------------------------------------


@pytest.fixture
def server(home) -> Iterator[tuple[str, str]]:
    """The API app on 127.0.0.1 (a werkzeug thread) with a published policy: its base URL and an admin token."""
    from werkzeug.serving import make_server

    from web import create_app

    _publish_value(home)
    with Workspace(home, create=False) as ws:
        token = ws.create_token("admin", "check-admin")[1]
    app = create_app({"HOME": str(home), "REFRESH_SECONDS": 0.2, "FLUSH_SECONDS": 0.2})
    http = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{http.server_port}", token
    finally:
        http.shutdown()
        thread.join(timeout=10)
        app.extensions["pex"].close()


def test_a_ready_server_raises_no_server_alert_and_without_a_token_says_what_it_could_not_check(home, server):
    url, token = server
    with Workspace(home, create=False) as ws:
        done = checks.check(ws, url=url, token=token)
        assert [a for a in done.alerts if a.rule in ("not_ready", "error_rate", "decision_log_backlog")] == []
        assert not [line for line in done.not_checked if line.startswith(("error_rate", "decision_log_backlog"))]
        bare = checks.check(ws, url=url)
        assert any(line.startswith("error_rate: not checked: /metrics answered 401") for line in bare.not_checked)
        closed = checks.check(ws, url="http://127.0.0.1:9")  # nothing listens on the discard port
        assert [a.rule for a in closed.alerts if a.experiment == alerts.SERVER] == ["not_ready"]
        with pytest.raises(checks.PexError, match="--url must be an http"):
            checks.check(ws, url="ftp://example")


# -- scenario (c): a feature shifts, another goes missing -------------------------------------------------------


def test_a_shifted_and_a_missing_feature_fire_exactly_two_drift_lines(home):
    from pex.services.monitoring import monitor

    name, version = _publish_value(home)
    now = datetime.now(UTC)
    with Workspace(home, create=False) as ws:
        dataset, _ = ws.load_dataset("exp")
        spec = dataset.spec
        kinds = dataset.features  # feature -> numeric | categorical
        numeric = next(f for f, kind in kinds.items() if kind == "numeric")
        gone = next(f for f in kinds if f != numeric)
        rows = dataset.frame.sample(600, random_state=1)
        decisions = []
        for i, (_, row) in enumerate(rows.iterrows()):
            features = {f: getattr(row[f], "item", lambda v=row[f]: v)() for f in kinds if f != gone and pd.notna(row[f])}
            features[gone] = None  # sent, but empty: a feature that went missing upstream
            if numeric in features:
                features[numeric] = features[numeric] * 3 + 50  # far outside the training deciles
            decisions.append({"decision_id": uuid.uuid4().hex, "decided_at": now,
                              "experiment": "exp", "policy": name, "version": version, "unit": f"s{i}",
                              "arm": spec.control, "propensity": 0.5, "features": features, "route": None})
        ws.append_decisions(decisions)
        metric = next(iter(spec.metrics))
        ws.put_outcomes("exp", [(f"s{i}", metric, 1.0) for i in range(600)])
        report = monitor(ws, name)
    assert sorted(report["drift"]["drifted"]) == sorted([numeric, gone]), report["notes"]
    code, out = _check(home, "exp")
    lines = out.strip().splitlines()
    assert code == 1 and len(lines) == 2, out
    assert all(line.startswith(f"drift exp {name}: feature ") for line in lines)
    assert {line.split(": feature ")[1].split(" ")[0] for line in lines} == {numeric, gone}


# -- docs/alerts.yml ----------------------------------------------------------------------------------------------


def test_the_prometheus_rules_file_is_valid_and_names_only_metrics_pex_exposes():
    import re
    from pathlib import Path

    yaml = pytest.importorskip("yaml")
    root = Path(__file__).resolve().parents[2]
    rules = yaml.safe_load((root / "docs" / "alerts.yml").read_text())["groups"][0]["rules"]
    exposed = set(re.findall(r'"(pex_[a-z_]+)"', (root / "web" / "metrics.py").read_text()))
    assert {"pex_http_requests", "pex_drift_flag", "pex_policy_stale", "pex_monitor_report_age_seconds"} <= exposed
    for rule in rules:
        assert {"alert", "expr", "labels", "annotations"} <= set(rule), rule
        assert rule["annotations"]["runbook"].split("#")[1] in alerts.RULES
        named = set(re.findall(r"\b(pex_[a-z_]+)", rule["expr"]))
        # a counter is exposed with the _total suffix
        assert {re.sub(r"_total$", "", n) for n in named} <= exposed, (rule["alert"], named - exposed)
        assert named or rule["expr"].startswith("up{"), rule["alert"]
