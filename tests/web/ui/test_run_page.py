"""The run page (/ui/runs/<id>), its JSON twin and its downloads: summary.json, the run's policy documents and the
offline evaluation report served as is, under its own Content-Security-Policy."""

from __future__ import annotations

import html
import json

import pytest

from tests.web.ui.cell_rule import assert_cell_rule


def _run_id(home) -> int:
    from pex.store.workspace import Workspace

    with Workspace(home, create=False) as ws:
        return ws.list_runs("exp")[0]["id"]


def test_the_page_equals_its_twin(ui_client, ui_home):
    run_id = _run_id(ui_home.home)
    client = ui_client("view")
    page, twin = client.get(f"/ui/runs/{run_id}"), client.get(f"/ui/runs/{run_id}.json")
    assert page.status_code == 200 and twin.status_code == 200
    data = twin.get_json()
    rows = assert_cell_rule(page.get_data(as_text=True), data, expect=("policies", "settings"))
    assert rows["policies"] == len(data["policies"]) > 1
    run = data["run"]
    assert (run["id"], run["experiment"], run["dataset_version"], run["n_units"]) == (run_id, "exp", 1, 2000)
    assert run["asked_by"] == "command line (pex run)" and data["job"] is None
    assert {s["key"]: s["value"] for s in data["settings"]}["learner"] == "t"
    recommended = [p for p in data["policies"] if p["recommended"]]
    assert [p["policy"] for p in recommended] == [data["recommendation"]["policy"]]
    text = html.unescape(page.get_data(as_text=True))
    assert data["recommendation"]["headline"] in text
    for link in (f"/ui/runs/{run_id}/report.html", f"/ui/runs/{run_id}/summary.json",
                 f"/ui/runs/{run_id}/policies/{recommended[0]['policy']}.json", "/ui/experiments/exp"):
        assert f'href="{link}"' in text, link


def test_the_downloads_are_what_the_store_holds(ui_client, ui_home):
    from pex.store.workspace import Workspace

    run_id = _run_id(ui_home.home)
    client = ui_client("view")
    summary = client.get(f"/ui/runs/{run_id}/summary.json")
    assert summary.status_code == 200 and summary.mimetype == "application/json"
    assert summary.headers["Content-Disposition"] == f'attachment; filename="run-{run_id}-summary.json"'
    with Workspace(ui_home.home, create=False) as ws:
        assert json.loads(summary.get_data()) == ws.run_summary(run_id)
        for row in json.loads(summary.get_data())["policies"][:3]:
            doc = client.get(f"/ui/runs/{run_id}/policies/{row['name']}.json")
            assert doc.status_code == 200
            assert json.loads(doc.get_data()) == ws.get_policy(row["name"], row["version"]).document
            assert json.loads(doc.get_data())["version"] == row["version"]
    missing = client.get(f"/ui/runs/{run_id}/policies/no-such-policy.json")
    assert missing.status_code == 404
    assert "has no policy 'no-such-policy'" in html.unescape(missing.get_data(as_text=True))


def test_the_report_is_served_as_is_under_its_own_policy(ui_client, ui_home, small_run):
    run_id = _run_id(ui_home.home)
    answer = ui_client("view").get(f"/ui/runs/{run_id}/report.html")
    assert answer.status_code == 200 and answer.mimetype == "text/html"
    # the very report `pex run` wrote for this run (ui_home's workspace is a copy of small_run's)
    assert answer.get_data(as_text=True) == (small_run.out / "report.html").read_text(encoding="utf-8")
    csp = answer.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "style-src 'unsafe-inline'" in csp and "script-src" not in csp
    assert "<script" not in answer.get_data(as_text=True)


def test_a_run_made_by_a_job_says_who_asked(ui_client, ui_home):
    from pex.store.workspace import Workspace

    run_id = _run_id(ui_home.home)
    with Workspace(ui_home.home) as ws:
        job = ws.put_job("run", {"experiment": "exp"}, "token:alice", experiment="exp")
        assert ws.claim_job("test-worker").id == job.id
        assert ws.finish_job(job.id, "succeeded", run_id=run_id)
    client = ui_client("view")
    data = client.get(f"/ui/runs/{run_id}.json").get_json()
    assert data["job"]["id"] == job.id and data["run"]["asked_by"] == "token:alice"
    page = client.get(f"/ui/runs/{run_id}").get_data(as_text=True)
    assert "token:alice" in page and f'href="/ui/jobs/{job.id}"' in page
    # the experiment page links the run to its job too
    exp = client.get("/ui/experiments/exp.json").get_json()
    assert exp["runs"][0]["asked"] == f"job {job.id}" and exp["jobs"][0]["id"] == job.id


@pytest.mark.parametrize("path", ["/ui/runs/999", "/ui/runs/999.json", "/ui/runs/999/summary.json",
                                  "/ui/runs/999/report.html", "/ui/runs/999/policies/exp-all-control.json"])
def test_an_unknown_run_is_a_404_with_message_and_hint(ui_client, path):
    answer = ui_client("view").get(path)
    assert answer.status_code == 404
    body = html.unescape(answer.get_data(as_text=True))
    assert "no pipeline run 999 in this workspace" in body and "each experiment's page lists its runs" in body
    assert "Traceback" not in body


def test_the_run_pages_need_a_login(ui_client, ui_home):
    run_id = _run_id(ui_home.home)
    client = ui_client(None)
    for path in (f"/ui/runs/{run_id}", f"/ui/runs/{run_id}/summary.json", f"/ui/runs/{run_id}/report.html"):
        assert client.get(path).status_code in (302, 401), path


def test_the_report_renders_in_chromium_without_a_console_error(ui_app, ui_home):
    """The report's inline styles and SVG work under its own policy, and the experiment page's forest plot loads as
    an image under the app's (a blocked style or a broken image would be a console error or a zero-size image)."""
    import threading

    from werkzeug.serving import make_server

    from tests.web.ui.browser import chromium

    run_id = _run_id(ui_home.home)
    server = make_server("127.0.0.1", 0, ui_app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    origin = f"http://127.0.0.1:{server.server_port}"
    try:
        with chromium(origin) as browser:
            session = browser.session()
            # every Content-Security-Policy violation of a page, as the page saw it (Chromium also logs it as an error)
            session.context.add_init_script("window.__csp = []; document.addEventListener('securitypolicyviolation', "
                                            "e => window.__csp.push(e.violatedDirective))")
            session.goto("/ui/login")
            session.page.fill("input[name=token]", ui_home.tokens["view"])
            session.page.locator("main form button[type=submit]").click()
            session.page.wait_for_url("**/ui/experiments")
            session.goto(f"/ui/runs/{run_id}/report.html")
            assert session.page.locator("svg").count() > 1
            assert session.page.evaluate("window.__csp") == []  # its inline styles are allowed, nothing else is asked
            session.goto("/ui/experiments/exp")
            assert session.page.evaluate("window.__csp") == []
            assert session.page.evaluate("document.querySelector('figure.forest img').naturalWidth") > 100
            session.assert_clean()
    finally:
        server.shutdown()
        thread.join(timeout=10)
