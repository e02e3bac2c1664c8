"""`pex run` / `pex.run`: outputs, schema, known truth, reproducibility, the CLI around it."""

from __future__ import annotations

import json
import shutil
from importlib import resources

import jsonschema
import pytest
from scipy import stats

import pex
from pex.evaluation.recommendation import CERTIFICATION, CERTIFICATIONS
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
