"""Cross-fitted runs (``pex run``'s default): two half fits, routing policies, certification on every unit."""

from __future__ import annotations

import numpy as np
import pytest

import pex
from pex.errors import PexError
from pex.evaluation.comparison import compare
from pex.experiment.simulate import simulate
from pex.policy.routing import RoutingPolicy
from pex.policy.value import ValuePolicy
from pex.services.crossfit import CrossFit, Folds
from pex.services.policies import load_fit
from pex.store.workspace import Workspace


@pytest.fixture(scope="module")
def halves(pipeline_run):
    """The run's two fits, loaded, in the order of summary.json's ``crossfit``."""
    home = pipeline_run.out.parent / "ws"
    with Workspace(home) as ws:
        return [load_fit(ws, "exp", fit_id) for fit_id in pipeline_run.summary["crossfit"]["fits"]]


def test_the_two_fits_hold_out_complementary_halves(pipeline_run, halves):
    summary = pipeline_run.summary
    assert summary["options"]["crossfit"] is True
    assert [h.summary["holdout"]["offset"] for h in halves] == [0.0, 0.5]
    held = [set(h.evaluation().frame["user_id"]) for h in halves]
    trained = [set(h.training["unit"]) for h in halves]
    assert not held[0] & held[1] and held[0] == trained[1] and held[1] == trained[0]
    assert len(held[0] | held[1]) == summary["n_units"] == summary["evaluation_rows"]["n_units"]
    assert summary["hte"]["fit"] == halves[0].record.id


def test_every_unit_is_decided_by_the_half_policy_that_never_saw_it(pipeline_run, halves):
    routed = [p for p in pipeline_run.policy_objects.values() if isinstance(p, RoutingPolicy)]
    assert {p.name for p in routed} >= {"exp-value", "exp-tree-d2", "exp-policy-tree"}
    for policy in routed:
        for fit, route in zip(halves, policy.routes):
            held = fit.evaluation().frame
            # the route serving a fit's held-out units is the one built from that fit (its value model or its lineage)
            built_by = route.value_model["fit"] if isinstance(route, ValuePolicy) else route.lineage["fit_run"]
            assert built_by == fit.record.id, policy.name
            assert np.array_equal(policy.greedy_arms(held), route.greedy_arms(held)), policy.name


def test_a_routing_policy_is_valued_as_its_halves_on_the_halves_they_did_not_see(pipeline_run, halves):
    """The DR value on every unit is the unit-weighted mean of each half-policy's DR value on its own fit's held-out
    units: the estimate of serving the routing policy, built only from honest half estimates."""
    summary = pipeline_run.summary
    coefficients = summary["objective_coefficients"]
    spec = halves[0].dataset.spec
    for name in ("exp-value", "exp-tree-d2"):
        policy = pipeline_run.policy(name)
        row = next(p for p in summary["policies"] if p["name"] == name)
        parts = [compare([route], fit.evaluation(), coefficients, spec)[0] for fit, route in zip(halves, policy.routes)]
        n = [fit.evaluation().n for fit in halves]
        for metric, cell in row["value"].items():
            expected = sum(k * part["value"][metric]["value"] for k, part in zip(n, parts)) / sum(n)
            assert cell["estimate"] == pytest.approx(expected, rel=1e-9, abs=1e-12), (name, metric)


def test_the_recommended_policy_is_certified_on_every_unit(pipeline_run):
    summary = pipeline_run.summary
    rec = summary["recommendation"]
    assert summary["evaluation_rows"]["parts"][0]["n_units"] + summary["evaluation_rows"]["parts"][1]["n_units"] == 20_000
    if rec["verdict"] == "personalize":
        assert rec["policy"] in rec["certification"]["certified"]
        assert rec["document"]["kind"] == "routing"
    assert any("cross-fitted" in c for c in summary["caveats"])


def test_folds_are_arcs_of_the_hash_circle():
    halves, single, thirds = Folds.kfold(2), Folds.holdout(0.25), Folds.kfold(3)
    assert halves.arcs == ((0.0, 0.5), (0.5, 0.5)) and halves.share == 1.0 and halves.crossed and halves.part == "half"
    assert single.arcs == ((0.0, 0.25),) and single.share == 0.25 and not single.crossed and single.label(0) == ""
    assert len(thirds) == 3 and thirds.share == pytest.approx(1.0) and thirds.label(2) == "fold 3: "


@pytest.mark.parametrize("make, message", [
    (lambda: Folds(()), "at least one fold"),
    (lambda: Folds.kfold(1), "at least two folds"),
    (lambda: Folds.holdout(0.0), "share above 0"),
    (lambda: Folds.holdout(1.0), "must be in"),
    (lambda: Folds(((0.0, 0.5), (0.6, 0.4))), "do not tile"),
    (lambda: Folds(((0.0, 0.5), (0.5, 0.4))), "add up to 0.9, not 1"),
])
def test_folds_that_cannot_cross_fit_are_refused(make, message):
    with pytest.raises(PexError, match=message):
        make()


def test_one_fold_is_a_single_hold_out_and_two_are_the_run(pipeline_run):
    with Workspace(pipeline_run.out.parent / "ws") as ws:
        contexts = [load_fit(ws, "exp", fit_id) for fit_id in pipeline_run.summary["crossfit"]["fits"]]
        one, both = CrossFit.of(contexts[:1]), CrossFit.of(contexts)
    assert both.folds == Folds.kfold(2) and both.description() == pipeline_run.summary["crossfit"]
    assert both.evaluation.n == len(both.building_frame()) == pipeline_run.summary["n_units"]
    assert contexts[0].certify_units == pipeline_run.summary["n_units"]  # planned for certification on every unit
    # one fold: its own held-out units, its own training units, and a recipe is its single policy
    assert one.folds == Folds.holdout(0.5) and one.description() is None and one.evaluation is contexts[0].evaluation()
    assert set(one.building_frame()["user_id"].astype(str)) == set(contexts[0].training["unit"])
    routed = pipeline_run.policy_objects["exp-value"]
    assert one.route([list(routed.routes)], unit="user_id", experiment="exp") == list(routed.routes)


def test_a_single_fit_run_is_still_available(tmp_path):
    """``crossfit=False`` (``pex run --no-crossfit``) keeps one fit and certifies on its held-out share, no routing."""
    sim = simulate(6_000, scenario="segment_harm", seed=8)
    spec = sim.write(tmp_path / "exp", name="seg")
    result = pex.run(spec, tmp_path / "out", home=tmp_path / "ws", dense=128, seed=8, crossfit=False, holdout=0.3)
    assert result.summary["crossfit"] is None and result.summary["options"]["crossfit"] is False
    assert all(p.kind != "routing" for p in result.policy_objects.values())
    assert result.summary["evaluation_rows"]["share"] == 0.3
    assert 0.25 * 6_000 < result.summary["evaluation_rows"]["n_units"] < 0.35 * 6_000


def test_pex_evaluate_values_a_cross_fitted_policy_on_every_unit(pipeline_run, tmp_path, capsys):
    """`pex evaluate` of a stored routing policy uses both halves, as the run did, and gives the run's own figures."""
    import json
    import shutil

    from pex.cli.main import main

    home = tmp_path / "ws"
    shutil.copytree(pipeline_run.out.parent / "ws", home)
    capsys.readouterr()
    assert main(["--home", str(home), "evaluate", "exp", "exp-tree-d2", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["kind"] == "routing" and row["evaluation_rows"]["n_units"] == 20_000
    assert row["evaluation_rows"]["fit"] == pipeline_run.summary["crossfit"]["fits"]
    entry = next(p for p in pipeline_run.summary["policies"] if p["name"] == "exp-tree-d2")
    for metric, cell in entry["value"].items():
        assert row["value"][metric]["value"] == pytest.approx(cell["estimate"], rel=1e-9)


def test_holdout_without_no_crossfit_is_a_usage_error(sim_dir, tmp_path, capsys):
    from pex.cli.main import main

    code = main(["--home", str(tmp_path / "ws"), "run", str(sim_dir / "exp.toml"), "--holdout", "0.3", "-q"])
    err = capsys.readouterr().err
    assert code == 2 and "--no-crossfit" in err
    assert not (tmp_path / "ws").exists()  # refused before anything was stored


def _half_policy(frame, name: str):
    """A data-adaptive tree from one half's units: treat the units up to the age cut (a decile) whose inverse-
    propensity estimate of revenue minus complaints (each in standard deviations) is best there; 5% exploration.
    The cut moves with the noise of each half, and with it the policy's true harm."""
    from pex.policy.tree import TreePolicy

    score = (frame["revenue"] / frame["revenue"].std() - frame["complaints"] / frame["complaints"].std()).to_numpy()
    treated = (frame["arm"] == "treat").to_numpy()
    age = frame["age"].to_numpy(dtype=float)
    cuts = np.nanquantile(age, np.linspace(0.1, 0.9, 9))
    # a unit's arm matches the rule with probability 0.5: the rule's value is the mean of score * match / 0.5
    values = [float(np.mean(score * (treated == (np.nan_to_num(age, nan=np.inf) <= c)) / 0.5)) for c in cuts]
    cut = float(cuts[int(np.argmax(values))])
    return TreePolicy(name=name, arms=["control", "treat"], default_arm="control", exploration=0.05,
                      tree={"feature": "age", "op": "<=", "value": cut, "missing": "right", "left": {"arm": "treat"},
                            "right": {"arm": "control"}})


@pytest.mark.slow
def test_cross_fitted_harm_bounds_cover_the_true_harm_of_data_adaptive_policies(tmp_path):
    """Over 200 simulated experiments (segment_harm, 4,000 units): each half's units choose a tree (which ages to
    treat), the two trees route to the halves they did not choose on, and the routing policy's
    complaint harm is estimated on every unit by the pipeline's own code (both halves' reward models, the comparison's
    guardrail cell). Its true harm on 400,000 fresh units is inside the one-sided 95% upper bound at least 93% of
    the time, and inside the two-sided 95% interval at least 93%: the cross-fitted certification holds for
    policies chosen on the data, not only for fixed ones."""
    from pex.evaluation.comparison import combined_evaluation, evaluation_data
    from pex.experiment.data import load_dataset
    from pex.experiment.features import FeatureEncoder
    from pex.experiment.spec import load_spec
    from pex.experiment.split import evaluation_mask, split_key
    from pex.experiment.truth import policy_truth
    from pex.policy.routing import routing_policy

    big = simulate(400_000, scenario="segment_harm", seed=10_001)
    upper_hits, two_sided, harms = [], [], []
    for r in range(200):
        spec = load_spec(simulate(4_000, scenario="segment_harm", seed=r).write(tmp_path / f"r{r}", name="seg"))
        dataset = load_dataset(spec)
        frame = dataset.frame
        units = frame["user_id"].to_numpy()
        encoder = FeatureEncoder.fit(frame, dataset.features)
        parts, routes = [], []
        for start in (0.0, 0.5):
            held = evaluation_mask(units, 0.5, r, start)
            routes.append((start, 0.5, _half_policy(frame.loc[~held], f"half{start}")))
            parts.append(evaluation_data(dataset, encoder, {"share": 0.5, "seed": r, "offset": start}))
        policy = routing_policy("routed", routes, key=split_key(r), unit="user_id")
        cell = compare([policy], combined_evaluation(parts, "both halves"), {}, spec)[0]["guardrails"]["complaints"]
        truth = policy_truth(policy, big)["harm"]["complaints"]
        harms.append(truth)
        upper_hits.append(truth <= cell["upper"])
        two_sided.append(abs(cell["estimate"] - truth) <= 1.959964 * cell["se"])
    upper, both = float(np.mean(upper_hits)), float(np.mean(two_sided))
    print(f"\ntrue harms {np.min(harms):+.3f} to {np.max(harms):+.3f}; coverage one-sided {upper:.3f}, two-sided {both:.3f}")
    assert np.std(harms) > 0.005  # the policies really differ between experiments: the target is data-adaptive
    assert upper >= 0.93 and both >= 0.93, (upper, both)
