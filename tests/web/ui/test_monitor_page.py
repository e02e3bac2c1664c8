"""The live monitor (/ui/monitor, /ui/monitor/<policy>): counts from the worker's hourly rollups equal a direct count
of the decision log, the page equals its twin, and an idle policy says so plainly."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

from pex.services import rollups
from pex.store.workspace import Workspace
from tests.web.ui.cell_rule import assert_cell_rule


def _decisions(policy: str, version: int, at: datetime, arms: list[str]) -> list[dict]:
    return [{"decision_id": uuid.uuid4().hex, "decided_at": at, "experiment": "exp", "policy": policy,
             "version": version, "unit": f"u{i}-{at.timestamp():.0f}", "arm": arm, "propensity": 0.5,
             "features": {}, "route": None} for i, arm in enumerate(arms)]


def _get(client, url: str) -> tuple[str, dict]:
    html, twin = client.get(url), client.get(url + ".json")
    assert html.status_code == 200 and twin.status_code == 200, (html.status_code, twin.status_code)
    return html.get_data(as_text=True), twin.json


def _publish_value(home) -> tuple[str, int]:
    with Workspace(home, create=False) as ws:
        name = next(p.name for p in ws.list_policies("exp") if p.name.endswith("-value"))
        return name, ws.publish(name, None, "tests").to_version


def test_nothing_live_says_so(ui_client):
    html, twin = _get(ui_client("view"), "/ui/monitor")
    assert twin["policies"] == [] and "No policy is live" in html
    assert twin["alerts"] == [] and "No alert fires: all clear." in html


def test_counts_come_from_the_rollups_and_equal_a_direct_count(ui_client, ui_home):
    name, version = _publish_value(ui_home.home)
    now = datetime.now(UTC)
    rows = (_decisions(name, version, now - timedelta(hours=2), ["control"] * 7 + ["daily"] * 5 + ["weekly"] * 3)
            + _decisions(name, version, now - timedelta(hours=30), ["daily"] * 4 + ["control"] * 2)
            + _decisions(name, version, now - timedelta(hours=60), ["weekly"] * 9))  # outside the 48 h window
    with Workspace(ui_home.home, create=False) as ws:
        ws.append_decisions(rows)
        ws.put_outcomes("exp", [(f"u{i}", "sessions", 1.0) for i in range(11)])
        client = ui_client("view")
        # the page reads the rollups only: before the worker's refresh it counts nothing
        _, before = _get(client, f"/ui/monitor/{name}")
        assert before["decisions"] == 0 and "No decisions in the last 48 h." in before["decisions_text"]
        rollups.refresh(ws)
        log = ws.read_decisions(policy=name)
    start = (now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=47))
    window = log[log["decided_at"] >= start]
    direct = Counter((t.floor("h").to_pydatetime(), arm) for t, arm in zip(window["decided_at"], window["arm"]))
    html, twin = _get(client, f"/ui/monitor/{name}")
    assert_cell_rule(html, twin, expect=("hours", "releases"))
    shown = Counter({(datetime.fromisoformat(r["at"]), arm): r[f"arm__{arm}"]
                     for r in twin["hours"] for arm in twin["arms"] if r[f"arm__{arm}"]})
    assert shown == direct and twin["decisions"] == len(window) == 21
    assert twin["outcomes"] == 11 and sum(r["outcomes"] for r in twin["hours"]) == 11
    assert twin["charts"]["decisions"].startswith("<svg") and ' style="' not in html
    assert [(e["action"], e["to"], e["who"]) for e in twin["releases"]] == [("publish", f"v{version}", "tests")]
    assert twin["live"] == f"v{version}" and twin["age"]
    # the overview counts the same rollups
    html, twin = _get(client, "/ui/monitor")
    assert_cell_rule(html, twin, expect=("policies",))
    row = next(r for r in twin["policies"] if r["policy"] == name)
    assert (row["decisions_count"], row["outcomes_count"], row["activity"]) == (21, 11, "serving")


def test_an_idle_live_policy_says_no_decisions_plainly(ui_client, ui_home):
    name, _ = _publish_value(ui_home.home)
    html, twin = _get(ui_client("view"), f"/ui/monitor/{name}")
    assert twin["hours"] == [] and twin["charts"]["decisions"] == ""
    assert "No decisions in the last 48 h" in html
    assert_cell_rule(html, twin, expect=("releases",))


def test_a_policy_that_is_not_live_is_404(ui_client):
    client = ui_client("view")
    answer = client.get("/ui/monitor/exp-value.json")
    assert answer.status_code == 404 and "is not live" in answer.json["error"]
    assert client.get("/ui/monitor/exp-value").status_code == 404
