"""The experiment page (/ui/experiments/<name>), its JSON twin, its forest plot and its effects CSV.

The page is checked on the shared UI workspace (the experiment ``exp``, run once through the pipeline) and on an
experiment whose data were made to fail the sample-ratio check: simulated, then a third of one arm's units dropped,
ingested and analysed but never run (the page must show its health and effects before any run).
"""

from __future__ import annotations

import html as html_module
import io
import math
import xml.dom.minidom

import pandas as pd
import pytest

from tests.web.ui.cell_rule import assert_cell_rule

PAGE = "/ui/experiments/exp"
TABLES = ("metrics", "health.srm_rows", "health.balance_rows", "effects", "latest_run.heterogeneity",
          "latest_run.leaderboard", "latest_run.segments", "runs")


def _text(response) -> str:
    return response.get_data(as_text=True)


def test_the_page_equals_its_twin_and_shows_every_part(ui_client, ui_home):
    client = ui_client("admin")
    page, twin = client.get(PAGE), client.get(PAGE + ".json")
    assert page.status_code == 200 and twin.status_code == 200
    data = twin.get_json()
    rows = assert_cell_rule(_text(page), data, expect=TABLES)
    assert rows["effects"] == len(data["effects"]) == 6  # 2 arms x 3 metrics
    assert data["analysed"] and data["health"]["srm"]["ok"] and data["health"]["srm"]["banner"] == ""
    assert {r["arm"] for r in data["health"]["srm_rows"]} == {"control", "daily", "weekly"}
    assert sum(r["units"] for r in data["health"]["srm_rows"]) == data["experiment"]["units"] == 2000
    run = data["latest_run"]
    assert run["readable"] and run["id"] == data["runs"][0]["id"]
    assert run["differ"]["answer"] in ("yes", "no") and run["leaderboard"]
    html = _text(page)
    assert "Sample-ratio mismatch" not in html
    assert f'action="/ui/experiments/{ui_home.experiment}/run"' in html  # Run pipeline, for an admin
    assert f'href="/ui/experiments/{ui_home.experiment}/policies"' in html
    assert f'href="/ui/runs/{run["id"]}"' in html
    assert 'src="/ui/experiments/exp/forest.svg"' in html
    for term in ("Sample-ratio check (SRM)", "CUPED", "CATE", "Lift", "95% CI", "p and Holm p", "Heterogeneity",
                 "Learner", "Segment"):
        assert f"<summary>{term}</summary>" in html, term
    assert html.count("<h1") == 1


def test_effects_show_words_next_to_their_numbers(ui_client):
    data = ui_client("view").get(PAGE + ".json").get_json()
    by = {(r["metric"], r["arm"]): r for r in data["effects"]}
    sessions = by[("sessions", "daily")]
    assert sessions["method"] == "cuped" and sessions["method_text"].startswith("CUPED: variance cut ")
    assert 0 < sessions["variance_reduction"] < 1
    assert sessions["ci_low"] < sessions["lift"] < sessions["ci_high"]
    # the verdict says in words what the interval says: better only when it lies wholly above 0 (sessions: increase)
    for row in data["effects"]:
        assert row["direction"] in ("✓ better", "✗ worse", "? unclear")
        if row["direction"] == "✓ better" and row["metric"] != "unsubscribes":
            assert row["ci_low"] > 0
        if row["direction"] == "? unclear":
            assert row["ci_low"] <= 0 <= row["ci_high"]
        # only the guardrail metric has a guardrail verdict
        assert (row["guardrail"] != "–") == (row["metric"] == "unsubscribes")
        assert row["p_holm"] >= row["p_value"]


def test_a_view_token_sees_no_run_button(ui_client, ui_home):
    client = ui_client("view")
    page = client.get(PAGE)
    assert page.status_code == 200
    html = _text(page)
    assert f"/ui/experiments/{ui_home.experiment}/run" not in html
    assert "Run pipeline" not in html
    assert client.post_form(f"/ui/experiments/{ui_home.experiment}/run").status_code == 403


def test_the_effects_csv_parses_and_equals_the_twins_numbers(ui_client):
    client = ui_client("view")
    answer = client.get(PAGE + "/effects.csv")
    assert answer.status_code == 200 and answer.mimetype == "text/csv"
    assert answer.headers["Content-Disposition"] == 'attachment; filename="exp-effects.csv"'
    frame = pd.read_csv(io.StringIO(_text(answer)))
    assert list(frame.columns) == ["arm", "metric", "control_mean", "arm_mean", "lift", "ci_low", "ci_high", "relative",
                                   "relative_ci_low", "relative_ci_high", "p_value", "p_holm", "method",
                                   "variance_reduction"]
    effects = client.get(PAGE + ".json").get_json()["effects"]
    assert len(frame) == len(effects)
    for (_, row), twin in zip(frame.iterrows(), effects):
        assert (row["arm"], row["metric"], row["method"]) == (twin["arm"], twin["metric"], twin["method"])
        for column in ("control_mean", "arm_mean", "lift", "ci_low", "ci_high", "relative", "relative_ci_low",
                       "relative_ci_high", "p_value", "p_holm", "variance_reduction"):
            if twin[column] is None:
                assert math.isnan(row[column]), column
            else:  # written at full precision: the very same float
                assert row[column] == twin[column], (column, row[column], twin[column])


def test_the_forest_plot_is_an_svg_image_under_its_own_policy(ui_client):
    answer = ui_client("view").get(PAGE + "/forest.svg")
    assert answer.status_code == 200 and answer.mimetype == "image/svg+xml"
    csp = answer.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script" not in csp
    doc = xml.dom.minidom.parseString(answer.get_data())  # a standalone file must be well-formed XML
    assert doc.documentElement.tagName == "svg"
    assert "http" not in answer.get_data(as_text=True).replace("http://www.w3.org/", "")  # no external reference


@pytest.mark.parametrize("path", ["/ui/experiments/nope", "/ui/experiments/nope.json", "/ui/experiments/nope/effects.csv",
                                  "/ui/experiments/nope/forest.svg"])
def test_an_unknown_experiment_is_a_404_with_message_and_hint(ui_client, path):
    answer = ui_client("view").get(path)
    assert answer.status_code == 404
    body = _text(answer)
    assert "no experiment named" in body and "nope" in body and "known experiments: exp" in body
    assert "Traceback" not in body


def test_the_pages_need_a_login(ui_client):
    client = ui_client(None)
    for path in (PAGE, PAGE + "/effects.csv", PAGE + "/forest.svg"):
        answer = client.get(path)
        assert answer.status_code in (302, 401), path
        assert "5.379" not in _text(answer)


@pytest.fixture
def mismatched(ui_home, tmp_path):
    """An experiment ``srm`` ingested and analysed (no run) whose ``daily`` arm lost a third of its units."""
    from pex.experiment.simulate import simulate
    from pex.services.experiments import analyze_stored, ingest
    from pex.store.workspace import Workspace

    simulate(1_500, scenario="notification_cadence", seed=5).write(tmp_path / "srm", name="srm")
    data = tmp_path / "srm" / "srm.csv"
    frame = pd.read_csv(data)
    daily = frame.index[frame["arm"] == "daily"]
    frame.drop(daily[: len(daily) // 3]).to_csv(data, index=False)
    with Workspace(ui_home.home) as ws:
        ingest(lambda: ws, tmp_path / "srm" / "srm.toml")
        analyze_stored(ws, "srm")
    return "srm"


def test_a_sample_ratio_mismatch_shows_a_banner_in_words_before_any_run(ui_client, mismatched):
    client = ui_client("view")
    page, twin = client.get(f"/ui/experiments/{mismatched}"), client.get(f"/ui/experiments/{mismatched}.json")
    assert page.status_code == 200
    data = twin.get_json()
    assert_cell_rule(_text(page), data, expect=("health.srm_rows", "effects"))
    srm = data["health"]["srm"]
    assert srm["ok"] is False and srm["p_value"] < srm["threshold"]
    html = _text(page)
    assert 'role="alert"' in html and "Sample-ratio mismatch" in html and "Do not trust the effects" in html
    assert srm["banner"] in html_module.unescape(html)
    assert "✗ sample-ratio mismatch" in html  # the verdict in words, not by colour alone
    counts = {r["arm"]: r["units"] for r in data["health"]["srm_rows"]}
    assert counts["daily"] < 0.8 * counts["weekly"]
    # no run yet: the page says what a run would add instead of failing
    assert data["latest_run"] is None and data["runs"] == []
    assert "Run the pipeline to see whether effects differ" in html
    assert client.get(f"/ui/experiments/{mismatched}/effects.csv").status_code == 200


def test_a_new_dataset_version_not_yet_analysed_says_so(ui_client, ui_home, tmp_path):
    """Health and effects are those of the current dataset version only: a newer version without an analysis shows
    none (never the older version's numbers as if they were its own), and the CSV is a 404 that says what to do."""
    import shutil

    from pex.services.experiments import ingest
    from pex.store.workspace import Workspace

    folder = tmp_path / "v2"
    folder.mkdir()
    shutil.copy(ui_home.spec, folder / ui_home.spec.name)
    frame = pd.read_csv(ui_home.data)
    frame.loc[0, "sessions"] = frame.loc[0, "sessions"] + 1.0
    frame.to_csv(folder / ui_home.data.name, index=False)
    with Workspace(ui_home.home) as ws:
        assert ingest(lambda: ws, folder / ui_home.spec.name).version.version == 2
    client = ui_client("view")
    data = client.get(PAGE + ".json").get_json()
    assert data["experiment"]["dataset_version"] == 2
    assert data["analysed"] is False and data["health"] is None and data["effects"] == [] and not data["has_forest"]
    assert data["latest_run"]["readable"]  # the run on version 1 is still the newest run
    html = client.get(PAGE).get_data(as_text=True)
    assert "(version 2) has not been analysed" in html and "Download effects (CSV)" not in html
    answer = client.get(PAGE + "/effects.csv")
    assert answer.status_code == 404 and "no analysis of its current dataset version" in html_module.unescape(answer.get_data(as_text=True))
    assert client.get(PAGE + "/forest.svg").status_code == 404
