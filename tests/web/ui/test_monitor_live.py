"""The monitor page's drift, staleness and alerts, and the experiments list's stale column: read from the stored
monitor report (never computed on a page view), the page equal to its twin by the cell rule."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pandas as pd

from pex.services.monitoring import monitor
from pex.store.workspace import Workspace
from tests.web.ui.cell_rule import assert_cell_rule


def _get(client, url: str) -> tuple[str, dict]:
    html, twin = client.get(url), client.get(url + ".json")
    assert html.status_code == 200 and twin.status_code == 200, (html.status_code, twin.status_code)
    return html.get_data(as_text=True), twin.json


def _drifted_report(home) -> tuple[str, str, str]:
    """Publish the value policy, serve 400 decisions with one numeric feature shifted and another sent empty, and
    store its monitor report; returns the policy and the two features."""
    with Workspace(home, create=False) as ws:
        name = next(p.name for p in ws.list_policies("exp") if p.name.endswith("-value"))
        version = ws.publish(name, None, "tests").to_version
        dataset, _ = ws.load_dataset("exp")
        numeric = next(f for f, kind in dataset.features.items() if kind == "numeric")
        gone = next(f for f in dataset.features if f != numeric)
        now = datetime.now(UTC)
        rows = []
        for i, (_, row) in enumerate(dataset.frame.sample(400, random_state=2).iterrows()):
            features = {f: getattr(row[f], "item", lambda v=row[f]: v)() for f in dataset.features
                        if f != gone and pd.notna(row[f])}
            features[gone] = None
            if numeric in features:
                features[numeric] = features[numeric] * 3 + 50
            rows.append({"decision_id": uuid.uuid4().hex, "decided_at": now, "experiment": "exp", "policy": name,
                         "version": version, "unit": f"m{i}", "arm": dataset.spec.control, "propensity": 0.5,
                         "features": features, "route": None})
        ws.append_decisions(rows)
        monitor(ws, name, now=now + timedelta(seconds=1))
    return name, numeric, gone


def test_the_monitor_page_shows_the_stored_drift_staleness_and_alerts(ui_client, ui_home):
    name, numeric, gone = _drifted_report(ui_home.home)
    html, twin = _get(ui_client("view"), "/ui/monitor")
    assert_cell_rule(html, twin, expect=("policies", "drift", "alerts"))
    row = next(r for r in twin["policies"] if r["policy"] == name)
    assert row["staleness"].startswith("fresh (policy 0 d, data 0 d; limit 30 d)") and row["stale"] is False
    drifted = {r["feature"]: r for r in twin["drift"] if r["policy"] == name and r["drifted"]}
    assert set(drifted) == {numeric, gone}
    assert "PSI" in drifted[numeric]["figure"] and drifted[numeric]["verdict"].startswith("drifted: ")
    assert "missing 100.0%" in drifted[gone]["figure"]
    assert any(r["verdict"] == "as in training" for r in twin["drift"] if r["policy"] == name)
    fired = [(a["rule"], a["policy"]) for a in twin["alerts"]]
    assert fired.count(("drift", name)) == 2
    # the worker has not counted these decisions yet: the page judges the stored counts, and no outcome lag shows
    assert ("outcome_lag", name) not in fired
    assert twin["rollouts"] == [] and "No rollout is running." in html


def test_the_experiments_list_has_a_stale_column(ui_client, ui_home):
    client = ui_client("view")
    html, twin = _get(client, "/ui/experiments")
    assert_cell_rule(html, twin, expect=("experiments",))
    assert twin["experiments"][0]["stale"] == "no live policy"
    with Workspace(ui_home.home, create=False) as ws:
        name = next(p.name for p in ws.list_policies("exp") if p.name.endswith("-value"))
        ws.publish(name, None, "tests")
    html, twin = _get(client, "/ui/experiments")
    assert_cell_rule(html, twin, expect=("experiments",))
    assert twin["experiments"][0]["stale"] == "fresh" and ">Stale<" in html
