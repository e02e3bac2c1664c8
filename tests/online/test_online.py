"""The online loop in process: the round's measurement against the simulator's truth, the promotion rule, and the
loop's use cases on a fitted workspace (state in the store, clear answers to missing data). Over HTTP against
gunicorn: tests/online/test_online_http.py."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from pex.cli.main import main
from pex.errors import DataError, PexError
from pex.experiment.guardrail import GuardrailRule
from pex.experiment.simulate import simulate
from pex.experiment.spec import MetricSpec
from pex.experiment.truth import distribution_truth
from pex.online.choice import choose_best
from pex.online.lifts import measure_round
from pex.online.space import OnlineSpace
from pex.online.spending import AlphaSpending
from pex.policy.constant import constant_policy
from pex.policy.routing import routing_policy
from pex.report.online import status_text
from pex.services import online
from pex.services.decision_log import DecisionLog
from pex.services.serving import PolicyServer
from pex.store.workspace import Workspace
from tests.served import served_tree

PEX = [str(Path(sys.executable).parent / "pex")]
METRICS = {m: MetricSpec(m, m, meta["goal"], meta["role"], meta.get("pre"), meta.get("max_harm"))
           for m, meta in simulate(10).metrics.items()}
# the loop's rules; each round judges them against its own holdout's control value, whatever the mean here
RULES = {m: GuardrailRule(m, meta.goal, meta.max_harm, control_mean=1.0) for m, meta in METRICS.items() if meta.role == "guardrail"}


# -- the measurement against the truth ------------------------------------------------------------------------

def _round(sim, exploration: float = 0.2):
    """A routing policy over all-control (holdout), all-daily and the example tree, decided for ``sim``'s units,
    and the logged-feedback frame the decision log and the outcomes would give."""
    arms = list(sim.arms)
    tree = served_tree(exploration).replace(name="tree")
    routes = [constant_policy(arms, "control", exploration, name="hold"), constant_policy(arms, "daily", exploration, name="daily"),
              tree.replace(arms=arms)]
    routing = routing_policy("exp-online", [(0.0, 0.3, routes[0]), (0.3, 0.3, routes[1]), (0.6, 0.4, routes[2])],
                             key="0123456789abcdef", unit="user_id", experiment="exp").replace(version=1)
    frame = sim.data.drop(columns=["arm"]).copy()
    chosen, propensity = routing.decide(frame, frame["user_id"])
    index = np.array([arms.index(a) for a in chosen])
    for m in sim.metrics:
        frame[m] = np.column_stack([sim.truth.outcomes[m][a] for a in arms])[np.arange(len(frame)), index]
    frame["arm"], frame["propensity"] = chosen, propensity
    frame["route"] = routing.route_names(frame["user_id"].tolist())
    frame["unit"] = frame["user_id"]
    return routing, frame


def test_round_lifts_match_the_truth_within_their_standard_errors():
    sim = simulate(60_000, seed=11)
    routing, frame = _round(sim)
    found = measure_round(frame, routing, "hold", "control", METRICS, RULES)
    assert found["usable"]
    for route in ("daily", "tree"):
        rows = (frame["route"] == route).to_numpy()
        sub = type(sim)(data=sim.data[rows].reset_index(drop=True), truth=_subset(sim.truth, rows), scenario=sim.scenario,
                        allocation=sim.allocation)
        policy = next(p for p in routing.routes if p.name == route)
        probs = policy.action_probabilities(sub.data)  # as served: exploration included
        truth = distribution_truth(probs, sub)
        for m in sim.metrics:
            lift = found["arms"][route]["metrics"][m]["lift"]
            # the arm's own units: the true lift of the arm as served over all-control on them
            assert abs(lift["estimate"] - truth["metrics"][m]["lift"]) < 4 * lift["se"], (route, m, lift, truth["metrics"][m])
        harm = found["arms"][route]["harms"]["unsubscribes"]
        assert abs(harm["estimate"] - truth["harm"]["unsubscribes"]) < 4 * harm["se"] + 0.01
    # the pre-period covariate takes out much of the sessions noise; metrics without one are not adjusted
    assert found["cuped"]["sessions"]["variance_reduction"] > 0.2
    assert set(found["cuped"]) == {"sessions"}


def _subset(truth, rows):
    from pex.experiment.simulate import Truth

    return Truth(arms=truth.arms, control=truth.control,
                 expected={m: {a: v[rows] for a, v in by.items()} for m, by in truth.expected.items()},
                 outcomes={m: {a: v[rows] for a, v in by.items()} for m, by in truth.outcomes.items()},
                 feature_names=truth.feature_names)


def test_missing_outcomes_are_left_out_and_counted_and_an_empty_arm_is_not_measured():
    sim = simulate(6_000, seed=12)
    routing, frame = _round(sim)
    frame.loc[frame.index[::3], "sessions"] = np.nan
    frame = frame[frame["route"] != "daily"]  # no traffic reached one arm
    found = measure_round(frame, routing, "hold", "control", METRICS, RULES)
    tree = found["arms"]["tree"]["metrics"]["sessions"]
    assert tree["missing"] > 0 and tree["n"] + tree["missing"] == found["arms"]["tree"]["units"]
    assert found["arms"]["daily"]["units"] == 0 and not found["arms"]["daily"]["measured"]
    assert not found["usable"]


# -- the promotion rule ---------------------------------------------------------------------------------------

@dataclass
class _Round:
    round: int
    status: str
    arms: list
    results: dict


def _measured(gain: float, gain_se: float, harm: float, harm_se: float) -> dict:
    from pex.experiment.guardrail import GuardrailRule

    h = GuardrailRule("g", "decrease", 0.05, 1.0).verdict(harm, harm_se, n=1000).to_dict()
    lift = {"estimate": gain, "se": gain_se, "ci_low": gain - 1.96 * gain_se, "ci_high": gain + 1.96 * gain_se}
    value = {"value": 10.0 + gain, "se": gain_se / 2**0.5}  # the arm's own value; the lift adds the holdout's error
    return {"measured": True, "units": 1000, "metrics": {"y": {"lift": lift, "value": value}}, "harms": {"g": h}}


def _rounds(*arms: dict, champion: int | None = None) -> list[_Round]:
    records = [{"route": f"a{i}", "role": "champion" if i == champion else "candidate", "policy": f"a{i}", "version": 1}
               for i in range(len(arms))]
    return [_Round(1, "complete", records, {"arms": {f"a{i}": a for i, a in enumerate(arms)}})]


def test_the_pick_is_the_best_arm_certified_at_the_bonferroni_level_that_beats_control():
    # a2 has the largest gain but its harm bound (0.02 + 2.13 x 0.016 = 0.054) is beyond 0.05 at 0.05 / 3 one-sided,
    # though it would pass at 0.05 alone (0.02 + 1.645 x 0.016 = 0.046): the pick is a1
    rounds = _rounds(_measured(0.5, 0.1, 0.0, 0.01), _measured(0.8, 0.1, -0.01, 0.01), _measured(1.0, 0.1, 0.02, 0.016))
    best = choose_best(rounds, {"y": 1.0}, "y")
    assert best["family"] == 3 and best["chosen"]["route"] == "a1"
    assert [r["certified"] for r in best["arms"]] == [True, True, False]
    # a certified arm whose gain's lower bound does not exclude 0 is not shipped: control stays
    weak = choose_best(_rounds(_measured(0.1, 0.1, 0.0, 0.01)), {"y": 1.0}, "y")
    assert weak["chosen"] is None and weak["why"].startswith("control: the best certified arm")
    assert choose_best([], {"y": 1.0}, "y")["why"] == "control: no round has been completed with measured arms yet"


def test_a_marginally_better_challenger_does_not_replace_the_champion():
    # both certified and beating control; the challenger's lower bound is the larger (0.9 - 2.24 x 0.1 against
    # 0.8 - 2.24 x 0.1), which the rule before took for "better", but it leads by 0.1 with a standard error of 0.1
    # (z = 1): the champion is kept
    marginal = _rounds(_measured(0.8, 0.1, 0.0, 0.01), _measured(0.9, 0.1, 0.0, 0.01), champion=0)
    best = choose_best(marginal, {"y": 1.0}, "y")
    assert best["chosen"]["route"] == "a0" and best["code"] == "kept_champion"
    versus = next(r for r in best["arms"] if r["route"] == "a1")["versus_champion"]
    assert versus["difference"] == pytest.approx(0.1) and versus["z"] == pytest.approx(1.0) and versus["lower"] < 0
    assert best["why"].endswith("the closest challenger, a1, differs from it by +0.1 (z = 1.00, lower bound -0.096): "
                                "not significantly better")
    # the issue's case: a lead at z = 1.73 (p = 0.042) against the round's level 0.05 / 4 = 0.0125 (z 2.24)
    se = 0.1 * 2**0.5  # each arm's own value has se 0.1, so their difference has se 0.1 x 2**0.5 too
    issue = _rounds(_measured(0.8, se, 0.0, 0.01), _measured(0.8 + 1.73 * se, se, 0.0, 0.01),
                    _measured(0.1, se, 0.0, 0.01), _measured(0.2, se, 0.0, 0.01), champion=0)
    kept = choose_best(issue, {"y": 1.0}, "y")
    assert kept["chosen"]["route"] == "a0" and kept["family"] == 4
    assert next(r for r in kept["arms"] if r["route"] == "a1")["versus_champion"]["z"] == pytest.approx(1.73)
    # the same lead without a champion is a plain pick by lower bound: the rule is about replacing, not about ties
    assert choose_best(_rounds(_measured(0.8, 0.1, 0.0, 0.01), _measured(0.9, 0.1, 0.0, 0.01)), {"y": 1.0}, "y")["chosen"]["route"] == "a1"


def test_a_significantly_better_challenger_replaces_the_champion():
    # a1 and a2 both beat the champion significantly; the one with the larger lower bound of the difference wins
    rounds = _rounds(_measured(0.5, 0.1, 0.0, 0.01), _measured(1.2, 0.1, 0.0, 0.01), _measured(1.1, 0.05, 0.0, 0.01),
                     champion=0)
    best = choose_best(rounds, {"y": 1.0}, "y")
    assert best["code"] == "replaced_champion" and best["chosen"]["route"] == "a1"
    assert "it replaces the champion, a0: +0.7 better" in best["why"]
    # a challenger that is better but breaks a guardrail does not replace it
    unsafe = _rounds(_measured(0.5, 0.1, 0.0, 0.01), _measured(1.5, 0.1, 0.06, 0.01), champion=0)
    assert choose_best(unsafe, {"y": 1.0}, "y")["chosen"]["route"] == "a0"
    # a champion with no earlier certification (round 1's offline pick) that does not beat control is not kept
    fading = _rounds(_measured(0.1, 0.1, 0.0, 0.01), _measured(0.4, 0.1, 0.0, 0.01), champion=0)
    dropped = choose_best(fading, {"y": 1.0}, "y")
    assert dropped["code"] == "picked" and dropped["chosen"]["route"] == "a1"
    assert dropped["why"].endswith("the champion, a0, has no live certification to keep and does not beat control on "
                                   "this round's units")


def test_measurements_are_not_pooled_across_rounds():
    # harm 0.03 with se 0.012 in each of two rounds as champion: pooled the bound would pass (0.047), but the round
    # that kept it was chosen for looking good, so only the newest round counts: 0.03 + 1.96 x 0.012 = 0.054 > 0.05
    champ = {"route": "c", "role": "champion", "policy": "c", "version": 1}
    other = {"route": "o", "role": "candidate", "policy": "o", "version": 1}
    first = _Round(1, "complete", [champ, other],
                   {"arms": {"c": _measured(0.8, 0.1, 0.03, 0.012), "o": _measured(0.2, 0.1, 0.0, 0.01)}})
    second = _Round(2, "complete", [champ, {**other, "route": "o2", "policy": "o2"}],
                    {"arms": {"c": _measured(0.8, 0.1, 0.03, 0.012), "o2": _measured(0.2, 0.1, 0.0, 0.01)}})
    best = choose_best([first, second], {"y": 1.0}, "y")
    assert not next(r for r in best["arms"] if r["route"] == "c")["certified"]
    assert best["chosen"]["route"] == "o2" and best["code"] == "picked"
    assert "the champion, c, has no live certification to keep and is not certified on this round's units" in best["why"]


def test_a_champion_keeps_the_certification_of_the_round_that_picked_it_until_a_round_refutes_it():
    a0 = {"route": "a0", "role": "candidate", "policy": "a0", "version": 1}
    a1 = {"route": "a1", "role": "candidate", "policy": "a1", "version": 1}
    first = _Round(1, "complete", [a0, a1], {"arms": {"a0": _measured(0.8, 0.1, 0.0, 0.01), "a1": _measured(0.2, 0.1, 0.0, 0.01)}})
    assert choose_best([first], {"y": 1.0}, "y")["chosen"]["route"] == "a0"

    def second(champion: dict) -> _Round:
        return _Round(2, "complete", [{**a0, "role": "champion"}, {**a1, "route": "b1", "policy": "b1"}],
                      {"arms": {"a0": champion, "b1": _measured(0.85, 0.1, 0.0, 0.01)}})

    # round 2 alone does not certify a0 again (0.03 + 2.24 x 0.012 = 0.057 > 0.05 at 0.05 / 2) but refutes nothing
    # (its 95% lower bound 0.03 - 1.645 x 0.012 is within 0.05): a0 stays, b1 is not significantly better
    kept = choose_best([first, second(_measured(0.8, 0.1, 0.03, 0.012))], {"y": 1.0}, "y")
    assert kept["code"] == "kept_champion" and kept["chosen"]["route"] == "a0" and kept["params"]["certified_round"] == 1
    assert not next(r for r in kept["arms"] if r["route"] == "a0")["certified"]
    assert kept["why"].startswith("a0 (round 2): kept as champion on its certification in round 1")
    # a round that refutes it, harm 0.08 (95% lower bound 0.064 beyond 0.05), drops it for the best certified arm
    refuted = choose_best([first, second(_measured(0.8, 0.1, 0.08, 0.01))], {"y": 1.0}, "y")
    assert refuted["code"] == "picked" and refuted["chosen"]["route"] == "b1"
    assert "the champion, a0, is refuted on this round's units" in refuted["why"]
    # so does a gain below control (95% upper bound -0.3 + 1.645 x 0.1 < 0)
    assert choose_best([first, second(_measured(-0.3, 0.1, 0.0, 0.01))], {"y": 1.0}, "y")["chosen"]["route"] == "b1"
    # a champion that was not the loop's pick (round 1's offline pick) has nothing to keep
    offline = choose_best([second(_measured(0.8, 0.1, 0.03, 0.012))], {"y": 1.0}, "y")
    assert offline["chosen"]["route"] == "b1" and "has no live certification to keep" in offline["why"]


def test_the_loops_budget_is_split_over_its_planned_rounds():
    plan = AlphaSpending(rounds=6)
    assert [plan.round_alpha(r) for r in (1, 6)] == [pytest.approx(0.05 / 6)] * 2 and plan.round_alpha(7) == 0.0
    assert sum(plan.round_alpha(r) for r in range(1, 10)) == pytest.approx(0.05)
    assert AlphaSpending.of({}) == plan  # a loop from before plans existed has the default plan
    # harm 0.02 with se 0.012 passes at 0.05 / 2 a round (0.02 + 1.96 x 0.012 = 0.0435) but not at its share of a
    # 6-round budget, 0.05 / 6 / 2 (z 2.64: 0.0517)
    rounds = _rounds(_measured(0.8, 0.1, 0.02, 0.012), _measured(0.5, 0.1, 0.0, 0.005))
    assert choose_best(rounds, {"y": 1.0}, "y")["chosen"]["route"] == "a0"
    spent = choose_best(rounds, {"y": 1.0}, "y", plan.round_alpha(1))
    assert spent["chosen"]["route"] == "a1" and spent["level"] == pytest.approx(1 - 0.05 / 12)
    assert "the round's 0.008333 of the loop's budget over its 2 arms" in spent["why"]
    # past the plan nothing is certified
    assert choose_best(rounds, {"y": 1.0}, "y", plan.round_alpha(7))["code"] == "none_certified"
    with pytest.raises(DataError, match="--rounds must be from 1 to 50"):
        AlphaSpending(rounds=0).check()


# -- the loop's use cases on a fitted workspace ------------------------------------------------------------------

def _loop(tmp_path: Path, serving_home: Path, arms: int) -> Path:
    """A private copy of the small run's workspace (fits with held-out units) and a round 1 of ``arms`` arms."""
    shutil.copytree(serving_home, tmp_path / "ws")
    with Workspace(tmp_path / "ws") as ws:
        online.start_loop(ws, "exp", online.LoopOptions(arms=arms, seed=1))
    return tmp_path / "ws"


@pytest.fixture
def loop_home(tmp_path, serving_home) -> Path:
    """A loop with a round 1 of 3 arms."""
    return _loop(tmp_path, serving_home, 3)


@pytest.fixture
def loop_home_2(tmp_path, serving_home) -> Path:
    """A loop with a round 1 of 2 arms: a next round asks Ax for one proposal beside the champion (Ax's batch
    proposal is the costly step of a next round; tests/online/test_online_http.py asks it for two)."""
    return _loop(tmp_path, serving_home, 2)


def _traffic(ws: Workspace, n: int, seed: int, outcomes: bool = True, prefix: str = "u") -> list[dict]:
    sim = simulate(n, seed=seed)
    sim.data["user_id"] = [f"{prefix}{seed}-{i}" for i in range(n)]
    server = PolicyServer(ws, DecisionLog(ws.append_decisions)).start()
    features = [c for c in sim.data.columns if c not in ("user_id", "arm", *sim.metrics)]
    sent = sim.data[features].astype(object).where(sim.data[features].notna(), None).to_dict("records")
    try:
        out = server.decide_batch("exp-online", {"units": [{"unit": u, "features": f} for u, f in zip(sim.data["user_id"], sent)]})
    finally:
        server.close()
    if outcomes:
        arms = np.array([d["arm"] for d in out["decisions"]])
        realised = {m: np.select([arms == a for a in sim.arms], [sim.truth.outcomes[m][a] for a in sim.arms]) for m in sim.metrics}
        records = [(u, m, float(v)) for m in sim.metrics for u, v in zip(sim.data["user_id"], realised[m])]
        ws.put_outcomes("exp", records)
    return out["decisions"]


def test_start_serves_round_one_under_the_stable_name_and_saves_ax_state(loop_home):
    with Workspace(loop_home) as ws:
        status = online.status(ws, "exp")
        assert status["live_version"] == status["rounds"][0]["policy_version"] and status["live_round"] == 1
        arms = status["rounds"][0]["arms"]
        assert [a["role"] for a in arms] == ["holdout", "candidate", "candidate", "candidate"]
        assert abs(sum(a["share"] for a in arms) - 1.0) < 1e-9 and arms[0]["share"] == 0.2
        loop = ws.get_loop("exp")
        space = OnlineSpace.restore(loop.ax_state, loop.settings["metrics"], loop.settings["objectives"],
                                    online.loop_rules(loop.settings))
        assert sorted(space.client._experiment.trials) == sorted(a["trial"] for a in arms[1:])
        decisions = _traffic(ws, 300, seed=5, outcomes=False)
        logged = ws.read_decisions(policy="exp-online")
        assert len(logged) == len(decisions) == 300
        assert set(logged["route"]) == {a["route"] for a in arms}  # every decision names its arm
        assert (logged["version"] == status["live_version"]).all()
    assert main(["--home", str(loop_home), "online", "start", "exp"]) == 2  # one loop per experiment


def _constraint_bounds(space: OnlineSpace) -> dict[str, float]:
    config = space.client._experiment.optimization_config
    return {c.metric_names[0]: c.bound for c in config.outcome_constraints}


def test_ax_is_told_the_guardrail_rules_limit(loop_home):
    with Workspace(loop_home) as ws:
        loop = ws.get_loop("exp")
        space = OnlineSpace.restore(loop.ax_state, loop.settings["metrics"], loop.settings["objectives"],
                                    online.loop_rules(loop.settings))
        assert loop.settings["guardrails"]["unsubscribes"]["control_mean"] > 0  # relative harm: the limit is max_harm
        assert _constraint_bounds(space) == {"harm0": 0.05}


def test_ax_is_told_a_limit_of_0_for_a_guardrail_whose_control_mean_is_0(tmp_path, serving_home, monkeypatch):
    """At a zero control mean harm is absolute and the rule's limit is 0, whatever max_harm says: Ax must be held
    to the same bound as every other stage, not to max_harm."""
    shutil.copytree(serving_home, tmp_path / "ws")
    load_fit = online.load_fit

    def no_unsubscribes_under_control(ws, experiment, fit_id=None):
        ctx = load_fit(ws, experiment, fit_id)
        spec, frame = ctx.dataset.spec, ctx.dataset.frame
        frame.loc[frame[spec.arm] == spec.control, spec.metrics["unsubscribes"].column] = 0.0
        return ctx

    monkeypatch.setattr(online, "load_fit", no_unsubscribes_under_control)
    with Workspace(tmp_path / "ws") as ws:
        online.start_loop(ws, "exp", online.LoopOptions(arms=2, seed=1))
        loop = ws.get_loop("exp")
        rules = online.loop_rules(loop.settings)
        assert rules["unsubscribes"].control_mean == 0.0 and rules["unsubscribes"].max_harm == 0.05
        space = OnlineSpace.restore(loop.ax_state, loop.settings["metrics"], loop.settings["objectives"], rules)
        assert _constraint_bounds(space) == {"harm0": 0.0}


def test_complete_answers_clearly_when_there_is_nothing_to_measure(loop_home, capsys):
    assert main(["--home", str(loop_home), "online", "complete", "exp"]) == 2
    assert "round 1 of 'exp' has no logged decisions yet" in capsys.readouterr().err
    with Workspace(loop_home) as ws:
        _traffic(ws, 400, seed=6, outcomes=False)  # decisions, but no outcome has come back
        with pytest.raises(DataError, match=r"the holdout has .* too few outcomes of sessions, converted, unsubscribes"):
            online.complete_round(ws, "exp")
        assert ws.rounds("exp")[0].status == "open"  # nothing half-written


@pytest.mark.slow  # a second pex process (Ax and torch imported cold): 10-22 s
def test_an_arm_without_traffic_is_refused_then_abandoned_on_request(loop_home, capsys):
    with Workspace(loop_home) as ws:
        decisions = _traffic(ws, 3_000, seed=7)
        # take one arm's decisions out of the log: no traffic reached it
        rounds = ws.rounds("exp")
        empty = rounds[0].arms[2]["route"]
        with ws.engine.begin() as conn:
            conn.exec_driver_sql("DELETE FROM decisions WHERE route = ?", (empty,))
        ws.put_outcomes("exp", [("nobody-1", "sessions", 3.0), ("nobody-2", "sessions", 1.0)])  # units never decided
    assert main(["--home", str(loop_home), "online", "complete", "exp"]) == 2
    err = capsys.readouterr().err
    assert f"round 1: 1 arm(s) cannot be measured yet ({empty} has 0 units" in err and "--abandon-empty" in err
    # completed from another process, as a round that spans days and restarts is
    done = subprocess.run([*PEX, "--home", str(loop_home), "online", "complete", "exp", "--abandon-empty", "--json"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout)
    results = status["rounds"][0]["results"]
    assert results["arms"][empty]["abandoned"] and len(decisions) == 3_000
    assert results["log"]["units_without_decision"] >= 2  # outcomes of units this round never decided are not used
    with Workspace(loop_home) as ws:
        loop = ws.get_loop("exp")
        space = OnlineSpace.restore(loop.ax_state, loop.settings["metrics"], loop.settings["objectives"],
                                    online.loop_rules(loop.settings))
        statuses = {a["route"]: space.client._experiment.trials[a["trial"]].status.name for a in ws.rounds("exp")[0].arms[1:]}
        assert statuses[empty] == "ABANDONED"
        assert sorted(set(statuses.values())) == ["ABANDONED", "COMPLETED"]
        with pytest.raises(PexError, match="round 1 of 'exp' is already complete"):
            online.complete_round(ws, "exp")


def test_status_text_and_promote(loop_home, capsys):
    with Workspace(loop_home) as ws:
        _traffic(ws, 4_000, seed=8)
    assert main(["--home", str(loop_home), "online", "complete", "exp"]) == 0
    text = capsys.readouterr().out
    assert "round 1 (v" in text and "lift [95% CI]" in text and "best so far:" in text
    assert main(["--home", str(loop_home), "online", "status", "exp", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["rounds"][0]["status"] == "complete" and status["best"]["family"] == 3
    assert main(["--home", str(loop_home), "online", "promote", "exp", "--json"]) == 0
    promoted = json.loads(capsys.readouterr().out)
    chosen = status["best"]["chosen"]
    assert promoted["promoted"] == (chosen["route"] if chosen else "control")
    with Workspace(loop_home) as ws:
        live = ws.get_policy("exp-online", ws.live_versions()["exp-online"])
        assert live.document["lineage"]["promoted_from"]["route"] == promoted["promoted"]
        assert live.kind != "routing"
    assert main(["--home", str(loop_home), "online", "promote", "exp", "r9-a9"]) == 2
    assert "no measured arm 'r9-a9'" in capsys.readouterr().err


def test_a_start_that_fails_before_round_one_leaves_no_loop_behind(tmp_path, serving_home, monkeypatch):
    shutil.copytree(serving_home, tmp_path / "ws")

    def broken(*args, **kwargs):
        raise DataError("the candidates could not be built", "")

    monkeypatch.setattr(online, "_open_round", broken)
    with Workspace(tmp_path / "ws") as ws:
        with pytest.raises(DataError, match="could not be built"):
            online.start_loop(ws, "exp", online.LoopOptions(arms=2))
        with pytest.raises(PexError, match="has no online loop"):
            ws.get_loop("exp")
        monkeypatch.undo()
        assert online.start_loop(ws, "exp", online.LoopOptions(arms=2))["rounds"][0]["status"] == "open"


def test_the_next_round_serves_the_champion_again_with_ax_proposals(loop_home_2, monkeypatch):
    with Workspace(loop_home_2) as ws:
        _traffic(ws, 3_000, seed=9)
        first = ws.rounds("exp")[0]
        pick = dict(first.arms[2])  # stand in for the rule's pick, whatever the noise made of round 1
        monkeypatch.setattr(online, "_champion", lambda ws, loop: pick)
        status = online.complete_round(ws, "exp", next_round=True)
        second = status["rounds"][1]
        roles = [a["role"] for a in second["arms"]]
        assert roles == ["holdout", "candidate", "champion"]
        champion = second["arms"][-1]
        assert (champion["policy"], champion["version"], champion["point"]) == (pick["policy"], pick["version"], pick["point"])
        assert champion["trial"] not in {a["trial"] for a in first.arms[1:]}  # a new Ax trial at the same point
        assert len({a["route"] for a in second["arms"]}) == 3
        assert status["live_version"] == second["policy_version"]
        decisions = _traffic(ws, 2_000, seed=10)
        assert {d["version"] for d in decisions} == {second["policy_version"]}
        assert pick["route"] in set(ws.read_decisions(policy="exp-online").query(f"version == {second['policy_version']}")["route"])
        # 500 of round 1's units come back: served as round 2 says, but left out of its measurement, since their
        # outcomes may carry round 1's arm (and an outcome joins every decision of its unit)
        back = _traffic(ws, 500, seed=9)
        assert {d["version"] for d in back} == {second["policy_version"]}
        done = online.complete_round(ws, "exp")["rounds"][1]["results"]
        assert done["log"]["returning_units"] == 500 and done["rows"] == 2_000
        assert sum(a["units"] for a in done["arms"].values()) == 2_000
        text = status_text(online.status(ws, "exp"))
        assert "2,000 units; 500 served in an earlier round left out)" in text
        assert text.count("against the champion: ") == 1  # round 2's one challenger, compared with the champion


def test_no_round_opens_beyond_the_plan_and_promote_refuses_an_uncertified_arm(tmp_path, serving_home, capsys):
    shutil.copytree(serving_home, tmp_path / "ws")
    home = str(tmp_path / "ws")
    assert main(["--home", home, "online", "start", "exp", "--arms", "1", "--rounds", "1", "--json"]) == 0
    started = json.loads(capsys.readouterr().out)
    assert started["settings"]["rounds"] == 1 and started["spending"] == {
        "alpha": 0.05, "rounds": 1, "per_round": 0.05, "completed": 0, "spent": 0.0,
        "rule": "equal shares, Bonferroni over each round's arms"}
    with Workspace(tmp_path / "ws") as ws:
        _traffic(ws, 600, seed=11)  # too few units for the guardrail's bound to certify anything
    assert main(["--home", home, "online", "complete", "exp", "--next"]) == 2
    err = capsys.readouterr().err
    assert "round 1 is the last of 'exp''s 1 planned rounds: no round 2 opens" in err and "without --next" in err
    with Workspace(tmp_path / "ws") as ws:
        assert ws.rounds("exp")[0].status == "open"  # refused before anything was measured
    assert main(["--home", home, "online", "complete", "exp"]) == 0
    assert "error control: alpha 0.05 split over 1 planned rounds (0.05 a round, Bonferroni over its arms); 1 completed" \
        in capsys.readouterr().out
    assert main(["--home", home, "online", "promote", "exp", "r1-a1"]) == 2
    err = capsys.readouterr().err
    assert "arm exp-online-r1-a1 is not certified under the loop's error control: unsubscribes bound" in err
    assert "(round 1's 0.05 of the loop's 0.05 budget over 1 rounds, Bonferroni over its 1 arms)" in err
    assert main(["--home", home, "online", "promote", "exp", "r1-a1", "--force", "--json"]) == 0
    with Workspace(tmp_path / "ws") as ws:
        promoted = ws.get_policy("exp-online", ws.live_versions()["exp-online"]).document["lineage"]["promoted_from"]
    assert promoted["certified"] is False and promoted["spending"]["rounds"] == 1
    assert main(["--home", home, "online", "complete", "exp", "--next"]) == 2
    assert "complete it without --next" not in capsys.readouterr().err  # already complete: only promote is left


@pytest.mark.parametrize(("argv", "message"), [
    (["online", "status", "nope"], "experiment 'nope' has no online loop"),
    (["online", "start", "exp", "--holdout", "1.5"], "--holdout must be a share strictly between 0 and 1"),
    (["online", "start", "exp", "--exploration", "0"], "exploration must be in (0, 1]"),
    (["simulate-traffic", "exp", "--url", "http://127.0.0.1:9", "--token", "t", "--units", "5"], "cannot reach http://127.0.0.1:9"),
    (["simulate-traffic", "exp", "--url", "http://127.0.0.1:9", "--token", "t", "--units", "5", "--scenario", "nope"],
     "'nope' is not one of"),
    (["online", "start", "exp", "--rounds", "0"], "--rounds must be from 1 to 50, got 0"),
])
def test_bad_online_input_is_a_clear_exit_2(argv, message, ws_home, capsys):
    assert main(["--home", str(ws_home), *argv]) == 2
    assert message in capsys.readouterr().err


def test_simulate_and_simulate_traffic_offer_every_scenario(tmp_path, capsys):
    from pex.cli.main import cli
    from pex.experiment.simulate import SCENARIOS

    for command in ("simulate", "simulate-traffic"):
        option = next(p for p in cli.commands[command].params if p.name == "scenario")
        assert tuple(option.type.choices) == SCENARIOS, command
    for scenario in ("segment_harm", "aligned_harm"):  # the benchmarks' scenarios, refused by `pex simulate` before
        assert main(["simulate", str(tmp_path / scenario), "--scenario", scenario, "-n", "50"]) == 0
        assert f"scenario {scenario!r}" in capsys.readouterr().out
