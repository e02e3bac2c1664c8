"""`pex run` / `pex.run`: outputs, schema, known truth, reproducibility, the CLI around it."""

from __future__ import annotations

import json
import shutil
from importlib import resources
from pathlib import Path

import jsonschema
import pytest
from scipy import stats

import pex
from pex.errors import PexError
from pex.evaluation.recommendation import CERTIFICATION, CERTIFICATIONS
from pex.experiment.simulate import simulate, write_product_export
from pex.policy.base import Policy
from pex.policy.constant import ConstantPolicy
from pex.policy.value import ValuePolicy
from pex.services.run import RunOptions

SCHEMA = json.loads(resources.files("pex").joinpath("schemas/summary.schema.json").read_text())
VOLATILE = {"generated_at", "timings"}


def _validate(summary: dict) -> None:
    jsonschema.validate(summary, SCHEMA, cls=jsonschema.Draft202012Validator)


def test_summary_on_disk_matches_the_schema_and_the_result(pipeline_run):
    on_disk = json.loads((pipeline_run.out / "summary.json").read_text())
    _validate(on_disk)
    assert on_disk["recommended_policy"] == pipeline_run.recommended_policy
    assert on_disk["experiment"] == "exp" and on_disk["n_units"] == 20_000
    assert set(on_disk["timings"]) >= {"ingest", "effects", "fit", "policies", "optimize", "recommend", "total"}


def test_schema_rejects_a_summary_missing_design_keys(pipeline_run):
    for key in ("srm", "effects", "recommended_policy", "policies"):
        broken = {k: v for k, v in pipeline_run.summary.items() if k != key}
        with pytest.raises(jsonschema.ValidationError, match=key):
            _validate(broken)
    bad = json.loads(json.dumps(pipeline_run.summary))
    bad["policies"][0]["value"]["sessions"].pop("ci_low")
    with pytest.raises(jsonschema.ValidationError, match="ci_low"):
        _validate(bad)


def test_the_schema_publishes_the_typed_model():
    """summary.schema.json is the published contract of the typed summary (pex.report.summary): the same format, every
    key it names is a field of the model, and every field the model requires, the schema requires too."""
    from pex.report.summary import SUMMARY_FORMAT, RunSummary

    typed = RunSummary.model_json_schema()
    assert SCHEMA["$id"] == SCHEMA["properties"]["format"]["const"] == SUMMARY_FORMAT
    assert set(SCHEMA["properties"]) <= set(typed["properties"])
    assert set(typed["required"]) <= set(SCHEMA["required"])
    policy = SCHEMA["properties"]["policies"]["items"]
    assert set(policy["properties"]) <= set(typed["$defs"]["PolicyRow"]["properties"])
    assert set(typed["$defs"]["PolicyRow"]["required"]) <= set(policy["required"])
    assert set(typed["$defs"]["HarmCell"]["required"]) == set(SCHEMA["$defs"]["harm"]["required"])
    assert set(typed["$defs"]["HarmCell"]["properties"]) == set(SCHEMA["$defs"]["harm"]["properties"])
    from pex.evaluation.recommendation import REASON_CODES

    reasons = SCHEMA["properties"]["recommendation"]["properties"]["reasons"]["items"]["properties"]["code"]["enum"]
    assert set(reasons) == set(REASON_CODES)  # every code the engine gives is published, and no other


def test_every_policy_file_loads_and_the_recommended_one_is_among_them(pipeline_run):
    names = {p["name"] for p in pipeline_run.summary["policies"]}
    assert pipeline_run.recommended_policy in names
    kinds = {p["kind"] for p in pipeline_run.summary["policies"]}
    assert kinds == {"constant", "routing"}  # cross-fitted: every personalized policy routes to its two halves
    routed = {r["kind"] for p in pipeline_run.summary["policies"] for r in p.get("routes", [])}
    assert routed == {"tree", "value"}
    assert any(p["name"].startswith("exp-pareto-") for p in pipeline_run.summary["policies"])
    models = {r.value_model["fit"]: r.model for p in pipeline_run.policy_objects.values()
              for r in getattr(p, "routes", ()) if isinstance(r, ValuePolicy)}
    assert len(models) == 2  # one effect model per half fit
    for entry in pipeline_run.summary["policies"]:
        doc = json.loads((pipeline_run.out / entry["file"]).read_text())
        policy = Policy.from_document(doc, lambda vm: models[vm["fit"]])
        assert policy.name == entry["name"] and policy.kind == entry["kind"]
    assert (pipeline_run.out / "report.html").stat().st_size > 10_000


def test_the_trade_off_scenario_never_recommends_a_truly_harmful_policy(pipeline_run, sim):
    """Known truth: all-daily gains most sessions but truly breaks the 5% unsubscribes limit; with 5,000 held-out
    units a rare guardrail cannot be certified for much, so whatever is recommended must truly keep it, and
    when that is control because nothing better could be certified, the recommendation says so with numbers."""
    from pex.experiment.truth import policy_truth

    rec = pipeline_run.summary["recommendation"]
    truth = policy_truth(pipeline_run.policy(), sim)
    assert truth["harm"]["unsubscribes"] <= 0.05, (rec, truth)
    daily = policy_truth(ConstantPolicy(name="d", arms=["control", "daily", "weekly"], default_arm="daily"), sim)
    assert daily["harm"]["unsubscribes"] > 0.15  # the scenario's trade-off
    if rec["verdict"] == "keep_control" and rec["cannot_certify"]:
        first = rec["reasons"][0]
        assert first["code"] == "cannot_certify" and "could not be certified" in rec["headline"]
        assert "standard error" in first["text"] and "over the limit" in first["text"]
    elif rec["verdict"] != "keep_control":
        assert rec["policy"] in rec["certification"]["certified"]
        assert truth["gain"] > 0
    cert = rec["certification"]
    assert cert["method"] == "graphical" and cert["level"] == pytest.approx(0.95)
    assert set(cert["certified"]) <= set(cert["family"]) and cert["order"] == cert["family"]
    # graphical testing tests every candidate: the first with half the level (all of it when it stands alone)
    assert cert["untested"] == [] and cert["tested"] == cert["family"]
    if len(cert["family"]) > 1:
        assert cert["first"] == cert["family"][0] and cert["first_level"] == pytest.approx(0.975)
    # cross-fitted: the screen's units are test units, so it drops nothing
    assert cert["screened_out"] == [] and "recipes" in cert["order_basis"]
    # lift bounds hold for every certified candidate at once: one claim, the one-sided 95%; more, a higher level
    kinds = {p["name"]: p["kind"] for p in pipeline_run.summary["policies"]}
    assert cert["lift_level"] >= 0.95 - 1e-9
    if len(cert["certified"]) <= 1 and not any(kinds[n] == "constant" for n in cert["certified"]):
        assert cert["lift_level"] == pytest.approx(0.95, abs=1e-6)


def test_a_kept_control_explanation_names_the_gatekeeper_its_miss_and_the_units_to_certify(pipeline_run):
    """The pipeline run's own policies and units, with the unsubscribes limit set just above the first candidate's
    estimate (1 standard error: inside the limit, its bound over it). The explanation names that first candidate, by
    how much its bound missed and the units that would certify it at 80% power, phrased as estimates; under
    fixed-sequence testing the candidates never tested are said to be not tested, never "not certified"."""
    from dataclasses import replace

    from pex.evaluation.comparison import compare, harm_estimates
    from pex.evaluation.recommendation import CANNOT_CERTIFY, NOT_TESTED, recommend
    from pex.experiment.guardrail import Harm
    from pex.report.summary import RunSummary

    policies = list(pipeline_run.policy_objects.values())
    data = pipeline_run.details["evaluation"]
    coefficients = pipeline_run.details["build_report"]["objective_coefficients"]
    spec = pipeline_run.details["crossfit"].contexts[0].dataset.spec
    first_name = pipeline_run.summary["recommendation"]["certification"]["first"]
    first = next(p for p in policies if p.name == first_name)
    _rules, harms = harm_estimates([first], data, spec)
    e = harms[(first_name, "unsubscribes")]
    tight = replace(spec, metrics={**spec.metrics, "unsubscribes": replace(spec.metrics["unsubscribes"], max_harm=e.value + e.se)})
    rows = compare(policies, data, coefficients, tight)
    for method, level in (("graphical", 0.975), ("fixed-sequence", 0.95)):
        rec = recommend(policies, rows, data, tight, coefficients, holdout_share=1.0, certification=method)
        gate = next(r for r in rec.reasons if r.code == CANNOT_CERTIFY and r.params["role"] == "gatekeeper")
        assert gate.params["policy"] == first_name and first_name not in rec.certification["certified"]
        h = Harm.from_dict(gate.params["harms"]["unsubscribes"])
        assert h.level == pytest.approx(level) and h.estimate < h.limit < h.upper
        need = h.units_to_certify()
        assert need is not None and need > data.n  # more units than it had: it missed
        # at 80% power: the bound at the test's level passes 80% of the time if harm and spread are as estimated
        z = stats.norm.ppf(h.level) + stats.norm.ppf(0.8)
        assert need == pytest.approx(h.n * (z * h.se / (h.limit - h.estimate)) ** 2, rel=0.02)
        text = gate.text
        assert first_name in text and "estimated at" in text and f"{h.level:.1%} upper bound" in text
        assert f"{(h.upper - h.limit) * 100:.1f} points over the limit" in text
        assert f"at 80% power and that level, an experiment of about {need:,} units would certify it" in text
        cert = rec.certification
        untested = cert["untested"]
        named = {r.params["policy"] for r in rec.reasons if r.code == CANNOT_CERTIFY}
        assert not named & set(untested) and not named & set(cert["screened_out"])
        if method == "fixed-sequence":
            assert untested == cert["family"][1:]
            assert next(r for r in rec.reasons if r.code == NOT_TESTED).params["policies"] == untested
        else:
            assert untested == []
        if rec.verdict == "keep_control" and rec.cannot_certify:
            assert rec.reasons[0].code == CANNOT_CERTIFY and "could not be certified" in rec.headline
        summary = RunSummary.load({**pipeline_run.summary, "recommendation": {**rec.to_dict(),
                                                                             "document": {}}})
        for name in untested:
            assert summary.standing(summary.by_name[name]) == "not tested"


@pytest.fixture(scope="module")
def segment_run(tmp_path_factory):
    """``segment_harm``: the arm lifts revenue for everyone but raises a common complaint by 60% on Android."""
    sim = simulate(30_000, scenario="segment_harm", seed=5)
    base = tmp_path_factory.mktemp("segment")
    spec = sim.write(base / "exp", name="seg")
    return sim, pex.run(spec, base / "out", home=base / "ws", dense=256, seed=5)


def test_the_safe_personalized_policy_is_found_and_certified(segment_run):
    """The issue's case: treating everyone breaks the 10% limit (+24% complaints), withholding the arm from the
    harmed segment keeps it; pex must recommend a certified personalization that truly keeps the guardrail and
    gets at least half the gain of the best policy the truth allows."""
    from pex.experiment.truth import constrained_oracle, policy_truth

    _sim, result = segment_run
    big = simulate(200_000, scenario="segment_harm", seed=77)
    rec = result.summary["recommendation"]
    assert rec["verdict"] == "personalize", rec
    assert rec["policy"] in rec["certification"]["certified"]
    truth = policy_truth(result.policy(), big)
    oracle = constrained_oracle(big)
    assert truth["harm"]["complaints"] <= 0.10
    assert truth["gain"] >= 0.5 * oracle["gain"], (truth["gain"], oracle["gain"])
    treat_all = policy_truth(ConstantPolicy(name="t", arms=["control", "treat"], default_arm="treat"), big)
    assert treat_all["harm"]["complaints"] > 0.10
    entry = next(p for p in result.summary["policies"] if p["name"] == "seg-all-treat")
    assert entry["certification"] in ("screened out", "not certified")


@pytest.mark.slow  # 7-11 s; the procedures are compared on shared fits by bench/certification.py and tested in test_multiple_testing
def test_step_down_and_gated_certification_on_the_same_run(segment_run):
    """The other multiple-testing procedures on the segment run's own policies and held-out units: their harms are
    the comparison's own; step-down tests every candidate (none left after a failure), gated tests the safest alone
    first, as fixed-sequence does; a candidate is certified exactly when each guardrail's bound at the level its claim
    was made at is within the limit, and those levels are at least 95%."""
    from pex.evaluation.comparison import harm_estimates
    from pex.evaluation.recommendation import recommend
    from pex.services.policies import load_fit
    from pex.store.workspace import Workspace

    _sim, result = segment_run
    ctx = load_fit(Workspace(result.out.parent / "ws"), "seg", result.details["fit_id"])
    policies = list(result.policy_objects.values())  # the order of the comparison rows
    names = [p.name for p in policies]
    rows = result.details["rows"]
    data = result.details["evaluation"]  # cross-fitted: every unit, each under the route that never saw it
    assert data.n == 30_000
    rules, harms = harm_estimates(policies, data, ctx.dataset.spec)
    assert {m: r.limit for m, r in rules.items()} == {"complaints": 0.10}
    for (name, metric), e in harms.items():
        cell = rows[names.index(name)]["guardrails"][metric]
        assert e.value == pytest.approx(cell["estimate"], rel=1e-9) and e.se == pytest.approx(cell["se"], rel=1e-9)
    crossfit = result.details["crossfit"]
    screen = {p.name: crossfit.screen(p) for p in policies}
    assert {p: {m: c.to_dict() for m, c in s.items()} for p, s in screen.items()} == {p.name: r["screen"] for p, r in zip(policies, rows)}
    coefficients = result.details["build_report"]["objective_coefficients"]
    fixed = recommend(policies, rows, data, ctx.dataset.spec, coefficients, screen=screen, holdout_share=0.25,
                      certification="fixed-sequence").certification
    for method in ("step-down", "gated", "graphical"):
        rec = recommend(policies, rows, data, ctx.dataset.spec, coefficients, screen=screen, holdout_share=0.25,
                        certification=method)
        cert = rec.certification
        assert cert["method"] == method and "step-down max-t" in cert["procedure"]
        assert cert["family"] == fixed["family"]
        first = cert["family"][0]
        if method == "gated":  # the safest candidate alone, at the full level, as fixed-sequence tests it
            assert cert["harms"][first] == fixed["harms"][first]
            assert cert["untested"] == ([] if first in cert["certified"] else cert["family"][1:])
        else:  # step-down and graphical test every candidate
            assert cert["untested"] == [] and cert["tested"] == cert["family"]
        for name in cert["tested"]:
            harms = cert["harms"][name]
            assert all(h["level"] >= 0.95 - 1e-12 for h in harms.values())
            assert (name in cert["certified"]) == all(h["upper"] <= h["limit"] for h in harms.values())
        assert rec.policy in [*cert["certified"], "seg-all-control"]
    with pytest.raises(ValueError, match="certification must be one of"):
        recommend(policies, rows, data, ctx.dataset.spec, {}, certification="bonferroni")


def test_result_frames_and_decisions(pipeline_run, sim):
    effects = pipeline_run.effects
    assert {"metric", "arm", "estimate", "ci_low", "ci_high", "p_value"} <= set(effects.columns)
    assert len(effects) == 3 * 2
    board = pipeline_run.leaderboard
    assert board.groupby("metric")["selected"].sum().eq(1).all()
    table = pipeline_run.policies
    assert table["recommended"].sum() == 3  # one row per metric
    assert (table["ci_low"] <= table["value"]).all() and (table["value"] <= table["ci_high"]).all()
    front = pipeline_run.pareto
    assert {"weight_sessions", "lift_sessions", "harm_unsubscribes", "treated_share"} <= set(front.columns)
    # feasible points have a certifiable bound within the limit, so their point estimate is within it too
    assert (front["harm_unsubscribes"] <= 0.05 + 1e-12).all()
    rows = sim.data.head(500).drop(columns=["sessions", "converted", "unsubscribes", "arm"])
    decisions = pipeline_run.decide(rows, seed=1)
    assert list(decisions.index) == list(rows.index)
    assert set(decisions["arm"]) <= {"control", "daily", "weekly"}
    assert ((decisions["propensity"] > 0) & (decisions["propensity"] <= 1)).all()
    with pytest.raises(pex.PexError, match="no policy"):
        pipeline_run.policy("nope")


def test_the_cli_default_certification_is_the_pipelines():
    # the CLI offers CERTIFICATIONS with the first as its default
    assert CERTIFICATIONS[0] == CERTIFICATION == RunOptions().certification


@pytest.fixture(scope="module")
def null_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("null")
    simulate(6_000, scenario="null", seed=4).write(d, name="flat")
    return d


@pytest.mark.slow  # two 20k runs (25-35 s); reruns on one dataset version are tested in test_history.py
def test_null_scenario_keeps_control_and_a_rerun_reproduces_the_result(null_dir, tmp_path):
    """No effect at all: nothing beats control. The same seed gives the same policies, values and recommendation."""
    a = pex.run(null_dir / "flat.toml", tmp_path / "a", home=tmp_path / "ws", trials=4, batch=2, dense=128, seed=7)
    assert a.summary["recommendation"]["verdict"] == "keep_control", a.summary["recommendation"]
    assert a.recommended_policy == "flat-all-control"
    b = pex.run(null_dir / "flat.toml", tmp_path / "b", home=tmp_path / "ws", trials=4, batch=2, dense=128, seed=7)

    def stable(summary: dict) -> dict:
        # the second run's history says it is the second; its recommendation is the first run's (pex.services.history)
        s = {k: v for k, v in summary.items() if k not in VOLATILE | {"hte", "recommendation", "own_recommendation", "history"}}
        s["policies"] = [{k: v for k, v in p.items() if k != "version"} for p in s["policies"]]
        # the two half fits are new fits, with new ids, but hold out the same units
        s["crossfit"] = {**s["crossfit"], "fits": None,
                         "halves": [{k: v for k, v in h.items() if k != "fit"} for h in s["crossfit"]["halves"]]}
        s["pareto"] = {k: v for k, v in s["pareto"].items() if k != "fronts"} | {
            "fronts": {n: {k: v for k, v in f.items() if k != "seconds"} for n, f in s["pareto"]["fronts"].items()}}
        return s

    assert stable(a.summary) == stable(b.summary)
    assert b.summary["history"]["run"] == 2 and b.summary["history"]["same_settings_as"] == 1
    assert "With the same settings as run 1 the result is the same" in b.summary["history"]["text"]
    own = {k: v for k, v in b.summary["own_recommendation"].items() if k != "document"}
    assert own == {k: v for k, v in a.summary["recommendation"].items() if k != "document"}  # the same result again
    assert b.summary["recommendation"]["document"] == a.summary["recommendation"]["document"]  # run 1's stored version
    assert [r["score"] for r in a.summary["hte"]["leaderboard"]] == [r["score"] for r in b.summary["hte"]["leaderboard"]]


def test_cli_run_on_a_real_world_shaped_csv_then_report(tmp_path, run):
    spec = write_product_export(tmp_path)
    r = run("run", spec, "--out", tmp_path / "out", "--trials", "0", "--dense", "128", "--learner", "t")
    assert r.code == 0, r
    assert "Recommendation:" in r.out and "[6/6]" in r.err
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    _validate(summary)
    assert summary["arms"] == ["free", "trial"]
    assert summary["dataset"]["missing"]["Device Type"] > 0
    assert summary["pareto"]["objectives"] == ["revenue"]  # one objective: the front is the best point
    # trial helps mobile users and hurts desktop users: a personalized policy should pick that up
    assert summary["recommendation"]["verdict"] == "personalize", summary["recommendation"]
    r = run("report", "pricing-page", "--out", tmp_path / "again" / "report.html")
    assert r.code == 0, r
    assert "pricing-page" in (tmp_path / "again" / "report.html").read_text()


def test_cli_run_json_and_bad_inputs(tmp_path, run, null_dir, home):
    r = run("run", tmp_path / "missing.toml")
    assert r.code == 2 and "error:" in r.err
    r = run("report", "flat", "--out", tmp_path / "r.html")
    assert r.code == 2 and "hint:" in r.err  # no workspace / experiment yet
    r = run("ingest", null_dir / "flat.toml")
    assert r.code == 0, r
    r = run("report", "flat", "--out", tmp_path / "r.html")
    assert r.code == 2 and "pex run" in r.err and not (tmp_path / "r.html").exists()
    r = run("run", null_dir / "flat.toml", "--out", tmp_path / "bad", "--certification", "bonferroni")
    assert r.code == 2 and "bonferroni" in r.err and not (tmp_path / "bad").exists()
    with pytest.raises(PexError, match="certification 'bonferroni' is not one of graphical") as caught:
        pex.run(null_dir / "flat.toml", tmp_path / "bad", home=tmp_path / "ws-bad", certification="bonferroni")
    assert caught.value.hint and not (tmp_path / "bad").exists() and not (tmp_path / "ws-bad").exists()
    r = run("run", null_dir / "flat.toml", "--out", tmp_path / "o", "--trials", "0", "--dense", "64", "--learner", "t",
            "--json")
    assert r.code == 0, r
    summary = json.loads(r.out)
    _validate(summary)
    assert "ax" not in summary["pareto"]["fronts"]
    # `pex report` reads the stored summary into the typed model: one of another format is refused, nothing written
    from pex.store.workspace import Workspace

    with Workspace(home, create=False) as ws:
        ws.put_run("flat", {**summary, "format": "pex.summary/1"})
    r = run("report", "flat", "--out", tmp_path / "old.html")
    assert r.code == 2 and "pex.summary/1" in r.err and "pex run" in r.err and not (tmp_path / "old.html").exists()


def test_cli_optimize_stores_pareto_candidates(pipeline_run, tmp_path, run, home):
    shutil.copytree(pipeline_run.out.parent / "ws", home)
    r = run("optimize", "exp", "--trials", "3", "--dense", "64", "--candidates", "2", "--seed", "4")
    assert r.code == 0, r
    assert "hypervolume" in r.out and "dense" in r.out
    r = run("optimize", "exp", "--trials", "0", "--dense", "64", "--json")
    assert r.code == 0, r
    out = json.loads(r.out)
    assert set(out["search"]["fronts"]) == {"dense", "kept"}
    assert all(p["name"].startswith("exp-pareto-") for p in out["policies"])
    r = run("optimize", "nope")
    assert r.code == 2


def test_a_failed_sample_ratio_check_blocks_certification_unless_a_reason_is_recorded(tmp_path, run):
    """A fifth of the treated units went missing after assignment: the sample-ratio check fails, so the run keeps
    control and says why, testing nothing; ``--accept-srm`` needs a reason, and with one the candidates are tested
    and the reason is part of the recommendation."""
    import pandas as pd

    from pex.evaluation.recommendation import SRM_ACCEPTED, SRM_FAILED, recommend

    d = tmp_path / "exp"
    spec = simulate(2_500, scenario="segment_harm", seed=9).write(d, name="lossy")
    data = d / "lossy.csv"
    frame = pd.read_csv(data)
    treated = frame.index[frame["arm"] != "control"]
    frame.drop(treated[: len(treated) // 5]).to_csv(data, index=False)
    r = run("run", spec, "--out", tmp_path / "bad", "--accept-srm", "  ")
    assert r.code == 2 and "--accept-srm needs a reason" in r.err and not (tmp_path / "bad").exists()
    result = pex.run(spec, tmp_path / "out", home=tmp_path / "ws", learner="t", dense=64)
    summary = result.summary
    assert summary["srm"]["ok"] is False
    rec = summary["recommendation"]
    cert = rec["certification"]
    assert rec["verdict"] == "keep_control" and "sample-ratio check failed" in rec["headline"]
    assert cert["srm_blocked"] is True and cert["tested"] == [] and cert["certified"] == []
    assert cert["untested"] == cert["family"] and cert["family"]
    assert rec["reasons"][0]["code"] == SRM_FAILED and "--accept-srm REASON" in rec["reasons"][0]["text"]
    page = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert 'role="alert"' in page and "sample-ratio check failed" in page
    policies = list(result.policy_objects.values())
    spec_ = result.details["crossfit"].contexts[0].dataset.spec
    accepted = recommend(policies, result.details["rows"], result.details["evaluation"], spec_,
                         result.details["build_report"]["objective_coefficients"], holdout_share=1.0,
                         srm=summary["srm"], accept_srm="bots filtered from the treated arm only, after assignment")
    assert accepted.certification["tested"] == accepted.certification["family"]
    assert not accepted.certification["srm_blocked"]
    said = next(r for r in accepted.reasons if r.code == SRM_ACCEPTED)
    assert "bots filtered" in said.text and said.params["p_value"] == summary["srm"]["p_value"]
