"""The online loop page (/ui/experiments/<name>/online): before a loop (what it is, how to start it, the start job),
and with a measured round (its twin, in-sample offline estimates labelled, the round jobs, promote, a view token)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from pex.experiment.simulate import simulate
from pex.services import online
from pex.services.decision_log import DecisionLog
from pex.services.serving import PolicyServer
from pex.store.workspace import Workspace
from tests.web.ui.cell_rule import assert_cell_rule

PAGE = "/ui/experiments/exp/online"


def _traffic(ws: Workspace, n: int, seed: int) -> None:
    """``n`` fresh simulated units decided by the loop's live round, with their outcomes reported."""
    sim = simulate(n, seed=seed)
    units = [f"web{seed}-{i}" for i in range(n)]
    features = [c for c in sim.data.columns if c not in ("user_id", "arm", *sim.metrics)]
    sent = sim.data[features].astype(object).where(sim.data[features].notna(), None).to_dict("records")
    server = PolicyServer(ws, DecisionLog(ws.append_decisions)).start()
    try:
        out = server.decide_batch("exp-online", {"units": [{"unit": u, "features": f} for u, f in zip(units, sent)]})
    finally:
        server.close()
    arms = np.array([d["arm"] for d in out["decisions"]])
    realised = {m: np.select([arms == a for a in sim.arms], [sim.truth.outcomes[m][a] for a in sim.arms]) for m in sim.metrics}
    ws.put_outcomes("exp", [(u, m, float(v)) for m in sim.metrics for u, v in zip(units, realised[m])])


@pytest.fixture(scope="module")
def loop_template(tmp_path_factory, ui_template):
    """ui_template's workspace with a loop whose round 1 (2 candidates from the offline search) is measured."""
    home = tmp_path_factory.mktemp("online") / "ws"
    shutil.copytree(ui_template.home, home)
    with Workspace(home) as ws:
        online.start_loop(ws, "exp", online.LoopOptions(arms=2, seed=1, from_offline=True))
        _traffic(ws, 2000, seed=8)
        online.complete_round(ws, "exp")
    return ui_template.moved(home)


@pytest.fixture
def ui_home(request, tmp_path, ui_template, loop_template):
    """A private copy of the workspace with a measured loop (or, with the indirect parameter "none", without one)."""
    source = ui_template if getattr(request, "param", "loop") == "none" else loop_template
    shutil.copytree(source.home, tmp_path / "ws")
    return source.moved(tmp_path / "ws")


def _page(client) -> tuple[str, dict]:
    html, twin = client.get(PAGE), client.get(PAGE + ".json")
    assert html.status_code == 200 and twin.status_code == 200
    return html.get_data(as_text=True), twin.json


def _jobs(home: Path) -> list:
    with Workspace(home, create=False) as ws:
        return ws.list_jobs()


@pytest.mark.parametrize("ui_home", ["none"], indirect=True)
def test_before_a_loop_the_page_says_what_it_is_and_starts_it_as_a_job(ui_client, ui_home):
    client = ui_client("admin")
    html, twin = _page(client)
    assert twin["has_loop"] is False and "No loop yet" in html and twin["what"] in html
    assert "exp-online" in twin["how_to_start"] and 'name="arms"' in html and '<label for="arms">' in html
    answer = client.post_form(f"{PAGE}/start", {"arms": "2", "from_offline": "yes"})
    assert answer.status_code == 303
    [job] = _jobs(ui_home.home)
    assert answer.headers["Location"].endswith(f"/ui/jobs/{job.id}")
    assert (job.kind, job.params, job.actor, job.status) == (
        "online_start", {"experiment": "exp", "arms": 2, "from_offline": True}, "token:ui-admin", "queued")
    refused = client.post_form(f"{PAGE}/start", {"arms": "40"})
    assert refused.status_code == 422 and "--arms must be from 1 to 16" in refused.get_data(as_text=True)
    assert len(_jobs(ui_home.home)) == 1
    html, twin = _page(client)  # the start job is queued: the page says so instead of offering a second start
    assert twin["busy"]["id"] == job.id and not twin["actions"]["start"] and "Start the loop</button>" not in html
    view = ui_client("view")
    assert "Start the loop</button>" not in view.get(PAGE).get_data(as_text=True)
    assert view.post_form(f"{PAGE}/start", {"arms": "2"}).status_code == 403


def test_a_measured_round_equals_its_twin_with_offline_estimates_labelled_in_sample(ui_client):
    html, twin = _page(ui_client("view"))
    counts = assert_cell_rule(html, twin, expect=("rounds", "arms", "offline"))
    assert counts == {"rounds": 1, "arms": 3, "offline": 2}
    holdout, *candidates = twin["arms"]
    assert holdout["role"] == "holdout" and holdout["offline"] == "–"
    assert (candidates[0]["role"], candidates[0]["role_meaning"]) == ("champion", "the offline pick")
    assert all(c["offline"].startswith("in-sample (offline): sessions ") for c in candidates)
    assert [o["arm"] for o in twin["offline"]] == [c["arm"] for c in candidates]
    assert all(c["units"] != "–" and "(" in c["lift__sessions"] for c in twin["arms"])
    assert all(c["certified"].split(" at ")[0] in ("certified", "not certified") for c in candidates)
    assert twin["pick"]["why"] and twin["pick"]["why"] in html.replace("&#39;", "'")
    assert twin["rounds"][0]["status"] == "complete, serving now" and twin["rounds"][0]["serving"] is True
    assert "/online/complete" not in html and "/online/promote" not in html  # a view token sees no buttons


def test_opening_the_next_round_is_a_job(ui_client, ui_home):
    client = ui_client("admin")
    html, twin = _page(client)
    assert twin["actions"]["next"] and not twin["actions"]["complete"] and "Open round 2" in html
    answer = client.post_form(f"{PAGE}/complete", {"next_round": "yes"})
    assert answer.status_code == 303
    [job] = _jobs(ui_home.home)
    assert (job.kind, job.params, job.actor) == ("online_complete", {"experiment": "exp", "next_round": True},
                                                 "token:ui-admin")
    html, twin = _page(client)
    assert f"Job {job.id}" in html and twin["busy"]["id"] == job.id
    # while the job works, no other round action is offered
    assert not (twin["actions"]["next"] or twin["actions"]["complete"] or twin["actions"]["promote"])
    assert "Open round 2" not in html and f"job {job.id}</a> (online_complete) is queued" in html


def test_promote_publishes_the_pick_with_the_actor(ui_client, ui_home):
    client = ui_client("admin")
    _, twin = _page(client)
    promote = twin["actions"]["promote"]
    assert promote["confirm"].startswith(f"exp-online: v{twin['live_version']} -> v")
    assert ui_client("view").post_form(f"{PAGE}/promote").status_code == 403
    answer = client.post_form(f"{PAGE}/promote")
    assert answer.status_code == 303 and answer.headers["Location"].endswith(PAGE)
    with Workspace(ui_home.home, create=False) as ws:
        event = ws.releases("exp-online")[-1]
        live = ws.get_policy("exp-online", ws.live_versions()["exp-online"])
    assert (event.action, event.actor) == ("publish", "token:ui-admin")
    assert live.document["lineage"]["promoted_from"]["route"].endswith(promote["pick"])
    html, twin = _page(client)
    assert_cell_rule(html, twin, expect=("rounds", "arms"))
    assert twin["live"].endswith("(a promoted arm)")
