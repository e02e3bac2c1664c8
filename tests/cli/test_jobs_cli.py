"""`pex jobs list|show|cancel|rerun`, `pex worker --once` and `pex token create --scope view` from the command line:
output, JSON, exit 2 with a hint on bad input; a view token is refused by the decision API."""

from __future__ import annotations

import json

from pex.cli.main import main
from pex.services import jobs
from pex.store.workspace import Workspace


def test_jobs_list_show_cancel_rerun(run, ws_home):
    assert run("jobs", "list").out.strip() == "no jobs yet"
    with Workspace(ws_home) as ws:
        job = jobs.submit(ws, "run", {"experiment": "exp", "learner": "t"}, "token:alice")
    listed = run("jobs", "list")
    assert listed.code == 0 and f"{job.id}" in listed.out and "queued" in listed.out and "token:alice" in listed.out
    as_json = json.loads(run("jobs", "list", "--experiment", "exp", "--json").out)
    assert [j["id"] for j in as_json] == [job.id] and as_json[0]["params"] == {"experiment": "exp", "learner": "t"}
    shown = run("jobs", "show", str(job.id))
    assert shown.code == 0 and "queued" in shown.out and "token:alice" in shown.out
    assert json.loads(run("jobs", "show", str(job.id), "--json").out)["status"] == "queued"
    cancelled = run("jobs", "cancel", str(job.id))
    assert cancelled.code == 0 and "cancelled" in cancelled.out
    again = run("jobs", "cancel", str(job.id))
    assert again.code == 2 and "already finished (cancelled)" in again.err and "hint:" in again.err
    rerun = run("jobs", "rerun", str(job.id), "--json")
    assert rerun.code == 0
    new = json.loads(rerun.out)
    assert new["status"] == "queued" and new["params"] == as_json[0]["params"] and new["actor"].startswith("cli:")
    with Workspace(ws_home) as ws:
        assert ws.get_job(job.id).message.startswith("cancelled by cli:")


def test_bad_input_exits_2_with_a_hint(run, ws_home):
    for args, message in ((("jobs", "show", "12"), "no job 12"), (("jobs", "show", "x"), "a job id is a number"),
                          (("jobs", "cancel", "3"), "no job 3"), (("jobs", "rerun", "3"), "no job 3"),
                          (("jobs", "list", "--experiment", "nope"), "no experiment named 'nope'"),
                          (("worker", "--poll", "0"), "0.1<=x<=60")):
        r = run(*args)
        assert r.code == 2 and message in r.err and "hint:" in r.err, (args, r)


def test_worker_once_with_nothing_queued_refreshes_the_rollups_and_exits(run, ws_home):
    r = run("worker", "--once")
    assert r.code == 0 and r.out.strip().endswith("no job queued")
    with Workspace(ws_home) as ws:
        assert set(ws.rollup_marks()) == {"decision_hours", "outcome_hours"}  # the refresh ran


def test_a_view_token_is_created_and_refused_by_the_decision_api(served, capsys):
    from web import create_app

    assert main(["--home", str(served.home), "token", "create", "--scope", "view", "--name", "viewer"]) == 0
    token = capsys.readouterr().out.strip()
    assert token.startswith("pex_")
    app = create_app({"HOME": str(served.home)})
    try:
        client = app.test_client()
        r = client.post(f"/api/v1/policies/{served.tree}/decide", json={"unit": "u1", "features": {}},
                        headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 403
        assert r.json["ok"] is False and r.json["status"] == 403
        assert "scope 'view'" in r.json["error"] and "--scope decide" in r.json["hint"]
        ok = client.post(f"/api/v1/policies/{served.tree}/decide", json={"unit": "u1", "features": {}},
                         headers=served.headers("decide"))
        assert ok.status_code == 200
    finally:
        app.extensions["pex"].close()
