"""The run report's "live vs offline" section: the next run reports what the experiment's staged rollout and online
loop stored (their agreements with the offline estimates, flags included) without measuring anything, and a run
with nothing live has no section and no key."""

from __future__ import annotations

import json
import shutil
from importlib import resources

import jsonschema
import pytest

from pex.monitor.agreement import agreement
from pex.report.html import render_report
from pex.report.summary import RunSummary
from pex.services import rollout
from pex.services.live_comparison import live_comparison
from pex.services.online import offline_agreement
from pex.services.run import run_stored
from pex.store.workspace import Workspace

SCHEMA = json.loads(resources.files("pex").joinpath("schemas/summary.schema.json").read_text())
SIGNS = {"sessions": 1.0, "converted": 1.0, "unsubscribes": -1.0}


@pytest.fixture
def home(tmp_path, serving_home):
    """A private copy of small_run's workspace (experiment ``exp``, nothing live)."""
    shutil.copytree(serving_home, tmp_path / "ws")
    return tmp_path / "ws"


def _rollout(ws: Workspace) -> tuple[str, int]:
    """A canary of small_run's value policy whose newest check stored a flagged agreement (sessions: live +0.05
    against +0.40 offline, z about -5) and an agreeing one (converted), as :func:`pex.services.rollout.check`
    keeps them; the rollout started through the service."""
    name = next(p.name for p in ws.list_policies("exp") if p.name.endswith("-value"))
    version = ws.get_policy(name).version
    found = rollout.start(ws, name, version, canary=0.05, holdout=0.05, force_reason="test: the report reads its check")
    assert live_comparison(ws, "exp") is None  # started, never checked: nothing to compare yet
    checked = {"rollout": found["id"], "step": 0, "share": 0.05, "version": found["live_version"], "outcomes": 600,
               "agreement": {"sessions": agreement(0.05, 0.05, 0.40, 0.05).to_dict(),
                             "converted": agreement(0.010, 0.008, 0.004, 0.003).to_dict(),
                             "unsubscribes": None},  # no offline lift with a standard error: no row
               "action": {"action": "hold", "reason": "few outcomes", "code": "few_outcomes"}, "checked_by": "watcher"}
    ws.update_rollout(found["id"], expect_step=0, last_check=checked)
    return name, version


def _online(ws: Workspace) -> None:
    """An online loop on ``exp`` with round 1 complete: arm a1 from the offline search (its live unsubscribes harm
    is far beyond the offline one: flagged; its sessions lift agrees), a2 an Ax proposal (no offline estimate), and
    round 2 open (not reported)."""
    ws.create_loop("exp", "exp", "exp-online", {"objectives": ["sessions"]}, {})
    offline = {"objectives": {"sessions": 0.30}, "objective_se": {"sessions": 0.05},
               "guardrail_harm": {"unsubscribes": 0.01}, "guardrail_se": {"unsubscribes": 0.01}, "fit": "f"}
    arms = [{"route": "exp-online-r1-holdout", "role": "holdout", "policy": "exp-online-r1-holdout", "version": 1},
            {"route": "exp-online-r1-a1", "role": "candidate", "policy": "exp-online-r1-a1", "version": 2,
             "offline": offline},
            {"route": "exp-online-r1-a2", "role": "candidate", "policy": "exp-online-r1-a2", "version": 3,
             "offline": None}]
    ws.save_round("exp", {}, 1, policy_version=4, arms=arms)
    measured = {"metrics": {"sessions": {"lift": {"estimate": 0.25, "se": 0.06}}},
                "harms": {"unsubscribes": {"estimate": 0.12, "se": 0.02}}}
    results = {"arms": {a["route"]: {**measured, "agreement": offline_agreement(a, measured, SIGNS)}
                        for a in arms if a["role"] != "holdout"}}
    ws.save_round("exp", {}, 1, results=results, expect_status="open")
    ws.save_round("exp", {}, 2, policy_version=5, arms=arms)


def _key(row: dict) -> tuple:
    return row["source"], row["policy"], row["metric"], row["kind"], row["flag"]


def test_the_gathered_section_has_exactly_the_stored_comparisons_flags_included(home):
    with Workspace(home) as ws:
        assert live_comparison(ws, "exp") is None  # nothing live yet
        name, version = _rollout(ws)
        _online(ws)
        found = live_comparison(ws, "exp")
        assert live_comparison(ws, "other") is None
    assert sorted(map(_key, found["rows"])) == sorted([
        ("rollout", name, "sessions", "lift", True), ("rollout", name, "converted", "lift", False),
        ("online", "exp-online-r1-a1", "sessions", "lift", False),
        ("online", "exp-online-r1-a1", "unsubscribes", "harm", True)])
    by = {(r["source"], r["metric"]): r for r in found["rows"]}
    sessions = by["rollout", "sessions"]
    assert sessions["version"] == version and sessions["step"] == 0 and sessions["share"] == 0.05
    assert sessions["status"] == "running"
    assert sessions["z"] == pytest.approx((0.05 - 0.40) / (0.05 * 2 ** 0.5))
    harm = by["online", "unsubscribes"]
    assert harm["round"] == 1 and harm["route"] == "exp-online-r1-a1" and harm["version"] == 2
    assert harm["z"] == pytest.approx((0.12 - 0.01) / (0.02 ** 2 + 0.01 ** 2) ** 0.5) and harm["band"] == 0.99
    assert set(found["notes"]) == {"rollout", "online"}


def _section(html: str) -> str:
    section = html[html.index('<section id="live">'):]
    return section[:section.index("</section>")]


def test_the_html_section_says_which_disagree_and_marks_them(home, small_run):
    with Workspace(home) as ws:
        name, _ = _rollout(ws)
        _online(ws)
        summary = {**small_run.summary, "live_comparison": live_comparison(ws, "exp")}
    jsonschema.validate(summary, SCHEMA)
    assert len(RunSummary.load(summary).live_comparison.flagged) == 2
    html = render_report(summary)
    section = _section(html)
    assert "Live vs offline" in section and 'href="#live"' in html
    assert "2 of 4 comparisons disagree beyond the 99% band" in section
    assert section.count("disagree beyond the 99% band (z = ") == 2  # each flagged row said in words
    assert f"rollout of {name.removeprefix('exp-')}" in section and "online round 1, arm online-r1-a1" in section
    assert section.count(">disagree</span>") == 2 and section.count(">agree</span>") == 2  # and marked
    assert section.count('<tr class="flagged">') == 2
    assert "the population moved, the offline estimate was optimistic" in section  # what a flag means


@pytest.mark.slow  # a whole run on 2,000 units, about 7 s
def test_the_next_run_carries_the_section_in_its_summary_and_report(home):
    with Workspace(home) as ws:
        _rollout(ws)
        _online(ws)
        result = run_stored(ws, "exp", learner="t", dense=64, seed=3, out=home.parent / "out")
        stored = ws.run_summary(result.run_id)
    jsonschema.validate(result.summary, SCHEMA)
    assert stored["live_comparison"] == result.summary["live_comparison"]
    live = RunSummary.load(result.summary).live_comparison
    assert len(live.rows) == 4 and sorted(r.metric for r in live.flagged) == ["sessions", "unsubscribes"]
    html = (home.parent / "out" / "report.html").read_text()
    assert "2 of 4 comparisons disagree beyond the 99% band" in _section(html)


def test_a_run_with_nothing_live_has_no_section_and_no_key(small_run):
    assert "live_comparison" not in small_run.summary
    jsonschema.validate(small_run.summary, SCHEMA)
    assert RunSummary.load(small_run.summary).live_comparison is None
    html = (small_run.out / "report.html").read_text()
    assert 'id="live"' not in html and "Live vs offline" not in html


def test_an_all_agreeing_section_says_so(small_run):
    rows = [{"source": "rollout", "policy": "exp-value", "version": 3, "status": "complete", "step": 2, "share": 1.0,
             "metric": "sessions", "kind": "lift", **{k: v for k, v in agreement(0.3, 0.05, 0.32, 0.04).to_dict().items()
                                                      if k in ("online_estimate", "online_se", "offline_estimate",
                                                               "offline_se", "z", "band", "flag")},
             "measured_at": "2025-01-02T03:04:05+00:00"}]
    html = render_report({**small_run.summary, "live_comparison": {"rows": rows, "notes": {"rollout": "r"}}})
    section = _section(html)
    assert "The comparison agrees within the 99% band" in section and "disagree beyond the" not in section
    assert "rollout of value v3, step 3 at 100% (complete)" in section
