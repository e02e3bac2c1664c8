"""The publish gate (:func:`pex.services.publishing.gate`) and `pex publish` behind it: a version goes live only when
its run certified it, the online loop promoted it from a certified arm, or it gives everyone control; `--force
--reason` overrides, recorded in the release history (issue 26, item 1). On :func:`small_run`'s workspace."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import pytest

from pex.cli.main import main
from pex.errors import DataError, UncertifiedError
from pex.services.publishing import FORCED_PREFIX, Judge, gate, publish_checked
from pex.store.workspace import Workspace


def _cli(home: Path, *args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["--home", str(home), *args])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def home(tmp_path, serving_home) -> Path:
    shutil.copytree(serving_home, tmp_path / "ws")
    return tmp_path / "ws"


def _verdicts(home: Path) -> dict[str, object]:
    """Each stored policy's gate verdict on its newest version, by code."""
    with Workspace(home, create=False) as ws:
        judge = Judge(ws)
        found: dict[str, list] = {}
        for r in ws.list_policies("exp"):
            found.setdefault(judge.gate(r.name, r.version).code, []).append(judge.gate(r.name, r.version))
    return found


def test_the_gate_passes_the_runs_certified_policy_and_the_all_control_one_and_says_why_for_the_rest(home):
    found = _verdicts(home)
    with Workspace(home, create=False) as ws:
        summary = ws.latest_run("exp")
    recommended = summary["recommendation"]["policy"]
    certified = set(summary["recommendation"]["certification"]["certified"])
    assert {g.policy for g in found.get("certified", [])} == certified
    # the recommendation always passes the gate: a certified policy, or everyone keeps control
    assert recommended in certified | {g.policy for g in found["fallback"]}
    assert all(g.certified and g.standing == "certified" and g.run is not None for g in found["certified"])
    [fallback] = found["fallback"]
    assert fallback.certified and fallback.policy.endswith("all-control")
    # a policy the run tested and did not certify: the why names each guardrail bound over its limit, from the cells
    refused = found["not_certified"]
    assert refused and not any(g.certified for g in refused)
    for g in refused:
        harms = g.figures["harms"]
        assert harms and all(h["upper"] > h["limit"] or h["verdict"] != "pass" for h in harms.values())
        assert all(f"{m} bound" in g.why and "over its limit" in g.why for m in harms)
        assert g.why.startswith(f"not certified by run {g.run}: ")


def test_a_version_no_run_stored_is_never_tested_and_a_promoted_one_carries_the_loops_verdict(home):
    with Workspace(home) as ws:
        record = ws.get_policy(next(r.name for r in ws.list_policies("exp") if r.kind == "routing"))
        [copy] = ws.put_policies("exp", [({**record.document, "exploration": 0.5}, None)], fit_id=record.fit_id)
        verdict = gate(ws, copy.name, copy.version)
        assert (verdict.certified, verdict.code, verdict.run) == (False, "never_tested", None)
        assert "never tested" in verdict.why
        for certified in (True, False):
            doc = {**record.document, "lineage": {**record.document["lineage"],
                                                  "promoted_from": {"route": "r1", "certified": certified}}}
            [promoted] = ws.put_policies("exp", [(doc, None)], fit_id=record.fit_id)
            verdict = gate(ws, promoted.name, promoted.version)
            assert verdict.certified is certified and "r1" in verdict.why
            assert verdict.code == ("promoted" if certified else "promoted_uncertified")


def test_publish_checked_refuses_an_uncertified_version_and_records_a_forced_one(home):
    with Workspace(home) as ws:
        [bad] = [g for g in _verdicts(home)["not_certified"]][:1]
        with pytest.raises(UncertifiedError, match=rf"policy {bad.policy} v{bad.version} is not certified") as caught:
            publish_checked(ws, bad.policy, bad.version, "tests")
        assert caught.value.status == 409 and "--force --reason" in caught.value.hint and bad.why in caught.value.message
        assert ws.releases(bad.policy) == []
        for reason in ("", "   ", "x" * 501, "line\nbreak"):
            with pytest.raises(DataError, match="reason for a forced publish"):
                publish_checked(ws, bad.policy, bad.version, "tests", force_reason=reason)
        release = publish_checked(ws, bad.policy, bad.version, "tests", force_reason="  owner accepts the risk ")
        assert release.forced and release.note == FORCED_PREFIX + "owner accepts the risk"
        assert ws.live_versions()[bad.policy] == bad.version


def test_pex_publish_refuses_an_uncertified_policy_with_exit_2_and_forces_it_with_a_reason(home):
    found = _verdicts(home)
    bad, good = found["not_certified"][0], found["certified"][0]
    code, out, err = _cli(home, "publish", bad.policy)
    assert code == 2 and out == ""
    assert f"policy {bad.policy} v{bad.version} is not certified to keep its guardrails: {bad.why}" in err
    code, _out, err = _cli(home, "publish", bad.policy, "--force")
    assert code == 2 and "--force needs --reason" in err
    code, _out, err = _cli(home, "publish", bad.policy, "--reason", "why")
    assert code == 2 and "--reason goes with --force" in err
    code, out, err = _cli(home, "publish", bad.policy, "--force", "--reason", "owner accepts the risk")
    assert code == 0, err
    assert f"v{bad.version} is live (was nothing live) (forced: owner accepts the risk)" in out
    # a certified one needs no override, and its release has no note
    code, out, err = _cli(home, "publish", good.policy, "--json")
    assert code == 0, err
    assert (json.loads(out)["forced"], json.loads(out)["note"]) == (False, None)
    # the history shows the override as such, in text and JSON
    code, out, _err = _cli(home, "releases")
    line = next(x for x in out.splitlines() if bad.policy in x)
    assert code == 0 and line.endswith("(forced: owner accepts the risk)")
    code, out, _err = _cli(home, "releases", bad.policy, "--json")
    [event] = json.loads(out)
    assert (event["forced"], event["note"], event["action"]) == (True, "forced: owner accepts the risk", "publish")


@pytest.mark.parametrize(("args", "message"), [
    (["--canary", "0"], "--canary 0 is not a percent in (0, 100]"),
    (["--canary", "101"], "--canary 101 is not a percent"),
    (["--canary", "five"], "--canary takes percents"),
    (["--canary", "5,25"], "--canary takes one percent"),
    (["--canary", "5", "--ramp", "5,50,25,100"], "does not increase"),
    (["--canary", "5", "--ramp", "5,25,50"], "does not end at 100"),
    (["--canary", "5", "--holdout", "100"], "leaves no traffic"),
    (["--ramp", "5,100"], "--ramp needs --canary"),
])
def test_bad_rollout_shares_exit_2_before_any_work(tmp_path, args, message):
    code, _out, err = _cli(tmp_path / "ws", "publish", "p", *args)
    assert code == 2 and message in err, err
    assert not (tmp_path / "ws").exists()


def test_a_copy_under_another_name_carries_its_sources_verdict_only_while_it_decides_the_same(home):
    from pex.services.publishing import copy_policy

    with Workspace(home) as ws:
        judge = Judge(ws)
        rows = [(r, judge.gate(r.name, r.version)) for r in ws.list_policies("exp")]
        source, verdict = next((r, g) for r, g in rows if g.code == "certified")
        refused_source, refused = next((r, g) for r, g in rows if g.code == "not_certified")
        copy = copy_policy(ws, source.name, source.version, "exp-served", {"retrained": {"run": 1}})
        got = gate(ws, "exp-served", copy.version)
        assert got.certified and got.code == "certified" and got.run == verdict.run
        assert got.why == f"a copy of {source.name} v{source.version}: {verdict.why}"
        # a copy of an uncertified version is refused like its source
        assert not gate(ws, "exp-served", copy_policy(ws, refused_source.name, refused_source.version, "exp-served").version).certified
        # lineage is data anyone can write: a document claiming to copy a certified version but deciding otherwise
        doc = {**copy_policy(ws, source.name, source.version, "exp-served").document, "exploration": 0.5}
        [forged] = ws.put_policies("exp", [(doc, None)], fit_id=source.fit_id)
        got = gate(ws, "exp-served", forged.version)
        assert (got.certified, got.code) == (False, "copy_changed") and "does not decide as" in got.why
        assert refused.code == "not_certified"
