"""The online loop's use cases: start a loop, complete a round (and open the next), status, promote.

A loop belongs to an experiment and serves every round under one stable policy name, ``<experiment>-online``:
a routing policy (:mod:`pex.policy.routing`) whose routes are the round's arms, a holdout of all-control and
one value-model policy per Ax trial, built from the experiment's newest fit. Callers keep asking that name for
decisions; each round is a new version of it, with its own hash key, so units are split afresh per round and
stay in their arm for the whole round. Every decision is logged with its version (the round), its route (the
arm) and its propensity; :func:`complete_round` measures the round from that log joined with the outcomes
(:mod:`pex.online.lifts`), tells Ax, and stores Ax's state with the results in one transaction.

A round is measured on fresh units only: a unit the loop's policy decided in an earlier version (an earlier
round, or a promoted arm) is served as the round says but left out of its measurement, and counted. Its outcome
may still carry an earlier arm's effect (an unsubscribe lasts), and outcomes join decisions by unit, so it would
credit one arm with another's effect. Leaving such units out, rather than keeping each unit on its first arm,
keeps serving stateless (a draw is a hash of the version and the unit, on any host) and makes each round the
independent test that the loop's error budget (:mod:`pex.online.spending`) is spent on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from pex.errors import DataError, NotFoundError, PexError
from pex.experiment.guardrail import GuardrailRule
from pex.experiment.spec import ExperimentSpec
from pex.online.choice import choose_best, judge_round
from pex.online.lifts import measure_round
from pex.online.space import Measurement, OnlineSpace
from pex.online.spending import DEFAULT_ROUNDS, AlphaSpending
from pex.policy.base import Policy
from pex.policy.constant import constant_policy
from pex.policy.routing import routing_policy
from pex.services.models import effect_model_by_id
from pex.services.outcomes import experiment_spec
from pex.services.policies import FitContext, load_fit
from pex.services.publishing import publish
from pex.store.workspace import Workspace

if TYPE_CHECKING:  # the search (and its Ax adapter) is imported only when a loop needs it
    from pex.search.tuning import TuningProblem

Say = Callable[[str], None]
SUFFIX = "-online"
METHODS = ("fast", "random_search")


@dataclass(frozen=True)
class LoopOptions:
    """How a loop runs: candidates per round, the holdout's share of units, where round 1 comes from, and the
    planned rounds its error budget is split over (:mod:`pex.online.spending`)."""

    arms: int = 4
    holdout: float = 0.2
    from_offline: bool = False
    exploration: float = 0.05
    seed: int = 0
    method: str = "fast"  # Ax's generation method: "fast" (Bayesian optimization) or "random_search" (the baseline)
    rounds: int = DEFAULT_ROUNDS

    def check(self) -> None:
        """DataError on an option out of range."""
        AlphaSpending(self.rounds).check()
        if not 1 <= self.arms <= 16:
            raise DataError(f"--arms must be from 1 to 16, got {self.arms}", "e.g. --arms 4: four candidates per round")
        if not 0.0 < self.holdout < 1.0:
            raise DataError(f"--holdout must be a share strictly between 0 and 1, got {self.holdout}",
                            "e.g. --holdout 0.2: a fifth of the units keep control, the comparison of every arm")
        if self.method not in METHODS:
            raise DataError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}",
                            "fast: Ax's Bayesian optimization; random_search: quasi-random points, the baseline")
        if not 0.0 < self.exploration <= 1.0:
            raise DataError(f"exploration must be in (0, 1], got {self.exploration}",
                            "live arms must explore so that every logged decision has a propensity above 0")


def _space_settings(spec: ExperimentSpec, ctx: FitContext) -> dict[str, Any]:
    """The loop's metrics, objectives and guardrail rules (relative to the control mean of the fit's training
    units, as the offline stages hold them), stored with the loop as the rules' own JSON."""
    rules = {c.rule.metric: c.rule for c in ctx.guardrail_constraints() if c.rule.has_limit}
    return {"metrics": list(spec.metrics), "objectives": [m for m, meta in spec.metrics.items() if meta.role != "guardrail"],
            "guardrails": {m: rule.to_dict() for m, rule in rules.items()}}


def loop_rules(settings: dict[str, Any]) -> dict[str, GuardrailRule]:
    """The loop's guardrail rules, as :func:`_space_settings` stored them."""
    return {m: GuardrailRule.from_dict(d) for m, d in settings["guardrails"].items()}


def _space(loop: Any) -> OnlineSpace:
    s = loop.settings
    return OnlineSpace.restore(loop.ax_state, s["metrics"], s["objectives"], loop_rules(s))


def start_loop(ws: Workspace, experiment: str, options: LoopOptions | None = None, say: Say | None = None) -> dict[str, Any]:
    """Create ``experiment``'s loop and open round 1 (Ax's quasi-random points, or the offline Pareto candidates)."""
    options = options or LoopOptions()
    options.check()
    say = say or (lambda m: None)
    spec = experiment_spec(ws, experiment)
    try:
        ws.get_loop(experiment)
    except NotFoundError:
        pass
    else:
        raise PexError(f"experiment {experiment!r} already has an online loop",
                       f"see `pex online status {experiment}`; `pex online complete {experiment} --next` opens its next round")
    ctx = load_fit(ws, experiment)
    settings = {**asdict(options), **_space_settings(spec, ctx), "control": spec.control, "policy": experiment + SUFFIX,
                "alpha": AlphaSpending(options.rounds).alpha}
    offline = offline_candidates(ctx, options, say) if options.from_offline else []
    # round 1's offline candidates are attached; quasi-random points fill the rest of round 1, and Ax's model
    # starts at round 2, from live data only
    space = OnlineSpace.new(experiment, settings["metrics"], settings["objectives"], loop_rules(settings),
                            seed=options.seed, initialization=options.arms - len(offline), method=options.method)
    ws.create_loop(experiment, experiment, settings["policy"], settings, space.state())
    try:
        trials: list[tuple[int, list[float], dict | None]] = [(space.attach(p), p, evidence) for p, evidence in offline]
        if options.from_offline:
            say(f"round 1: {len(trials)} offline Pareto candidates (their offline estimates kept as offline evidence)")
        if len(trials) < options.arms:
            say(f"asking Ax for {options.arms - len(trials)} configurations")
            trials += [(t, p, None) for t, p in space.ask(options.arms - len(trials))]
        return _open_round(ws, experiment, space, 1, trials, ctx, say)
    except BaseException:
        ws.discard_loop(experiment)  # no round opened: leave no loop behind that `start` would refuse to replace
        raise


def offline_candidates(ctx: FitContext, options: LoopOptions, say: Say) -> list[tuple[list[float], dict]]:
    """The offline weight search's spread Pareto points on the fit's training units, with their in-sample estimates."""
    from pex.search.tuning import optimize

    problem = _problem(ctx, options.exploration)
    say(f"offline weight search on {problem.n:,} training units")
    result = optimize(problem, dense=1024, candidates=options.arms, seed=options.seed, use_ax=False)
    kept = result.fronts["kept"]
    out = []
    for i, setting in zip(result.candidates, result.candidate_settings()):
        if setting["treated_share"] <= 0:
            continue
        # the first is the best on the primary metric: what the offline search alone would ship, so round 1's
        # champion (pex.online.choice)
        evidence = {"source": "offline", "in_sample": True, "offline_pick": not out, "objectives": setting["objectives"],
                    "guardrail_bound": setting["guardrail_bound"], "fit": ctx.record.id,
                    **offline_spread(problem, kept.draws[i]),
                    "note": "the offline search's in-sample estimate on the fit's training units; not told to Ax"}
        out.append(([float(x) for x in kept.draws[i]], evidence))
    return out


def offline_spread(problem: TuningProblem, point: np.ndarray) -> dict[str, dict[str, float]]:
    """A search point's standard errors on the fit's training units (what live measurements are compared with at
    ``online complete``, :func:`offline_agreement`): per objective its goal-signed lift's, per guardrail the harm and
    its standard error (the control mean taken as known, as the search does)."""
    change = problem.unit_changes(problem.choices(np.atleast_2d(np.asarray(point, dtype=float))))[0]  # (n, M)
    index = {m: k for k, m in enumerate(problem.metrics)}
    se = change.std(axis=0, ddof=1) / np.sqrt(problem.n)
    return {"objective_se": {m: float(se[index[m]]) for m in problem.objectives},
            "guardrail_harm": {m: float(r.sign * change[:, index[m]].mean() / r.scale) for m, r in problem.rules.items()},
            "guardrail_se": {m: float(se[index[m]] / r.scale) for m, r in problem.rules.items()}}


def offline_agreement(arm: dict[str, Any], measured: dict[str, Any], signs: dict[str, float]) -> dict[str, Any]:
    """Per metric, the agreement (:func:`pex.monitor.agreement.agreement`, 99% band) of an arm's live lift (goal-signed,
    as the offline search states it) and guardrail harm with the offline estimate that put the arm in the round; says
    so where the arm has none (Ax's proposals, a champion served again) or it was stored without standard errors."""
    from pex.monitor.agreement import agreement

    evidence = arm.get("offline") or {}
    if "objectives" not in evidence:
        why = "a champion served again" if arm.get("role") == "champion" else "an Ax proposal"
        return {"available": False, "why": f"no offline estimate: {why}", "metrics": {}}
    if "objective_se" not in evidence:
        return {"available": False, "why": "the offline estimate was stored without standard errors", "metrics": {}}
    out: dict[str, Any] = {}
    for m, offline in evidence["objectives"].items():
        lift = measured["metrics"].get(m, {}).get("lift")
        if lift is not None:
            out[m] = {"kind": "lift", **agreement(signs[m] * lift["estimate"], lift["se"], offline,
                                                  evidence["objective_se"][m]).to_dict()}
    for m, offline in evidence.get("guardrail_harm", {}).items():
        harm = measured["harms"].get(m)
        if harm is not None:
            out[m] = {"kind": "harm", **agreement(harm["estimate"], harm["se"], offline, evidence["guardrail_se"][m]).to_dict()}
    return {"available": True, "why": "live against the offline search's in-sample estimate (fit "
            f"{evidence.get('fit')}): an optimistic one, the best of many points measured on the units that chose it",
            "metrics": out, "flagged": sorted(m for m, a in out.items() if a["flag"])}


def candidate_policy(ctx: FitContext, point: list[float], name: str, exploration: float, lineage: dict) -> tuple[Policy, dict]:
    """The value-model policy of one search point, built as the offline Pareto candidates are."""
    from pex.policy.value import build_value_policy

    problem = _problem(ctx, exploration)
    u = np.asarray([point], dtype=float)
    weights = problem.weight_dict(problem.weights(u)[0])
    budget = float(problem.served_share(problem.budgets(u)[0]))
    if not any(weights.values()):  # an all-zero draw: no metric to score by, so nobody is treated
        return constant_policy(list(ctx.model.arms), ctx.model.control, exploration, name=name), {"weights": weights,
                                                                                                    "budget": 0.0}
    spec = ctx.dataset.spec
    policy, _info = build_value_policy(
        name=name, spec=spec, model=ctx.model, frame=ctx.training_frame(), fit_id=ctx.record.id, weights=weights,
        guardrails="penalty", budget=budget, exploration=exploration, lineage=lineage, effects=ctx.oof_effects(),
        harm_signal=ctx.pseudo_outcomes(), n_eval=ctx.n_eval())
    return policy.replace(experiment=spec.name), {"weights": weights, "budget": budget}


_PROBLEMS: dict[tuple[str, float], TuningProblem] = {}


def _problem(ctx: FitContext, exploration: float) -> TuningProblem:
    """The fit's search problem (for turning a point into weights and a cap), built once per fit."""
    from pex.search.tuning import TuningProblem

    key = (ctx.record.id, exploration)
    if key not in _PROBLEMS:
        _PROBLEMS.clear()
        _PROBLEMS[key] = TuningProblem.from_fit(ctx, exploration=exploration)
    return _PROBLEMS[key]


def _open_round(ws: Workspace, name: str, space: OnlineSpace, number: int, trials: list, ctx: FitContext,
                say: Say, champion: dict[str, Any] | None = None) -> dict[str, Any]:
    """Build the round's policies, store them and the routing version, save Ax's state with the round, publish."""
    loop = ws.get_loop(name)
    s = loop.settings
    stable, spec = loop.policy, ctx.dataset.spec
    arms_list, control = list(ctx.model.arms), ctx.model.control
    holdout = constant_policy(arms_list, control, s["exploration"], name=f"{stable}-r{number}-holdout").replace(
        experiment=spec.name, lineage={"online": {"loop": name, "round": number, "role": "holdout"}})
    built = []
    for i, (trial, point, evidence) in enumerate(trials, start=1):
        if evidence and "champion_of_round" in evidence:  # the champion's own stored policy, not a rebuild
            record = ws.get_policy(champion["policy"], champion["version"])
            policy = Policy.from_document(record.document, lambda vm: effect_model_by_id(ws, vm["fit"]))
            built.append((trial, point, evidence, policy, {"weights": champion["weights"], "budget": champion["budget"]}))
            continue
        route = f"{stable}-r{number}-a{i}"
        lineage = {"dataset": ctx.record.dataset_id, "fit_run": ctx.record.id,
                   "online": {"loop": name, "round": number, "trial": trial, "point": point}}
        policy, setting = candidate_policy(ctx, point, route, s["exploration"], lineage)
        built.append((trial, point, evidence, policy, setting))
        say(f"  {route}: weights {', '.join(f'{m} {w:.2f}' for m, w in setting['weights'].items())}, "
            f"at most {setting['budget']:.0%} treated")
    fresh = [b[3] for b in built if champion is None or b[3].name != champion["policy"]]
    stored = {r.name: r for r in ws.put_policies(spec.name, [(p.to_document(), None) for p in [holdout, *fresh]],
                                                 fit_id=ctx.record.id)}
    if champion is not None:
        stored[champion["policy"]] = ws.get_policy(champion["policy"], champion["version"])
    share = (1.0 - s["holdout"]) / len(built)
    routes = [(0.0, s["holdout"], holdout)] + [(s["holdout"] + j * share, share, b[3]) for j, b in enumerate(built)]
    routes[-1] = (routes[-1][0], 1.0 - routes[-1][0], routes[-1][2])  # the arcs tile [0, 1) exactly
    routing = routing_policy(stable, routes, key=round_key(stable, number), unit=spec.unit, experiment=spec.name,
                             lineage={"online": {"loop": name, "round": number}, "fit_run": ctx.record.id})
    version = ws.put_policies(spec.name, [(routing.to_document(), None)], fit_id=ctx.record.id)[0].version
    arms = [{"route": holdout.name, "role": "holdout", "policy": holdout.name, "version": stored[holdout.name].version,
             "share": s["holdout"]}]
    for (trial, point, evidence, policy, setting), (_start, sh, _p) in zip(built, routes[1:]):
        rec = stored[policy.name]
        is_champion = champion is not None and policy.name == champion["policy"]
        role = "champion" if is_champion or (evidence or {}).get("offline_pick") else "candidate"
        arms.append({"route": policy.name, "role": role, "policy": policy.name,
                     "version": rec.version, "trial": trial, "point": point, "weights": setting["weights"],
                     "budget": setting["budget"], "share": sh, "offline": None if is_champion else evidence,
                     "fit": champion["fit"] if is_champion else ctx.record.id})
    ws.save_round(name, space.state(), number, policy_version=version, arms=arms)
    publish(ws, stable, version)
    say(f"round {number} is live as {stable} v{version}: holdout {s['holdout']:.0%}, {len(built)} candidates")
    return status(ws, name)


def round_key(stable: str, number: int) -> str:
    """The SipHash key (16 characters) that routes round ``number``'s units: new per round, so units are randomised
    afresh, and the same in every process."""
    return hashlib.blake2b(f"{stable}/round/{number}".encode(), digest_size=8).hexdigest()


def _frame(ws: Workspace, loop: Any, current: Any, routing: Policy):
    from pex.services.feedback import feedback_table

    try:
        table = feedback_table(ws, loop.experiment, policy=loop.policy, version=current.policy_version)
    except NotFoundError:
        raise DataError(f"round {current.round} of {loop.name!r} has no logged decisions yet",
                        f"serve traffic to policy {loop.policy!r} (version {current.policy_version}) first; "
                        "decisions reach the log within a second of being served") from None
    frame = table.frame
    if frame["route"].isna().any():  # logged by a server older than the route column: the hash says it
        missing = frame["route"].isna()
        frame.loc[missing, "route"] = routing.route_names(frame.loc[missing, "unit"].tolist())
    return table, frame


def _routing(ws: Workspace, loop: Any, current: Any) -> Policy:
    record = ws.get_policy(loop.policy, current.policy_version)
    return Policy.from_document(record.document, lambda vm: effect_model_by_id(ws, vm["fit"]))


def complete_round(ws: Workspace, experiment: str, *, next_round: bool = False, abandon_empty: bool = False,
                   say: Say | None = None) -> dict[str, Any]:
    """Measure the open round, tell Ax (objectives and guardrail harms, with standard errors), save; with
    ``next_round``, open the next one. When the newest round is already complete, ``next_round`` only opens the next."""
    say = say or (lambda m: None)
    loop = ws.get_loop(experiment)
    rounds = ws.rounds(experiment)
    current = rounds[-1]
    space = _space(loop)
    if current.status == "complete":
        if not next_round:
            raise PexError(f"round {current.round} of {experiment!r} is already complete",
                           f"open the next one with `pex online complete {experiment} --next`")
    plan = AlphaSpending.of(loop.settings)
    if next_round and current.round >= plan.rounds:
        raise PexError(f"round {current.round} is the last of {experiment!r}'s {plan.rounds} planned rounds: no round "
                       f"{current.round + 1} opens",
                       f"the loop's {plan.alpha:g} error budget is spent over those rounds; "
                       + ("complete it without --next, then " if current.status != "complete" else "")
                       + f"`pex online promote {experiment}` publishes the best arm")
    if current.status != "complete":
        _complete(ws, loop, current, space, abandon_empty, say)
    if not next_round:
        return status(ws, experiment)
    ctx = load_fit(ws, loop.experiment)
    champion = _champion(ws, loop)
    fresh = loop.settings["arms"] - (champion is not None)
    say(f"asking Ax for {fresh} configurations (its model of every live measurement so far)")
    trials = [(t, p, None) for t, p in space.ask(fresh)] if fresh else []
    if champion is not None:
        say(f"the champion, {champion['route']}, is served again to fresh units")
        trials.append((space.attach(champion["point"]), champion["point"], {"champion_of_round": current.round}))
    return _open_round(ws, experiment, space, current.round + 1, trials, ctx, say, champion=champion)


def _champion(ws: Workspace, loop: Any) -> dict[str, Any] | None:
    """The newest completed round's pick (:mod:`pex.online.choice`) with its arm record, or None (control)."""
    rounds = ws.rounds(loop.name)
    chosen = _best(ws, loop, rounds)["chosen"]
    if chosen is None:
        return None
    arm = next(a for a in rounds[chosen["round"] - 1].arms if a["route"] == chosen["route"])
    return dict(arm)


def _best(ws: Workspace, loop: Any, rounds: list[Any]) -> dict[str, Any]:
    spec = experiment_spec(ws, loop.experiment)
    return choose_best(rounds, _signs(loop, spec), _primary(loop.settings, spec), AlphaSpending.of(loop.settings).round_alpha)


def _signs(loop: Any, spec: ExperimentSpec) -> dict[str, float]:
    return {m: float(spec.metrics[m].sign) for m in loop.settings["objectives"]}


def _primary(settings: dict[str, Any], spec: ExperimentSpec) -> str:
    return next((m for m in settings["objectives"] if spec.metrics[m].role == "primary"), settings["objectives"][0])


def _complete(ws: Workspace, loop: Any, current: Any, space: OnlineSpace, abandon_empty: bool, say: Say) -> None:
    spec = experiment_spec(ws, loop.experiment)
    routing = _routing(ws, loop, current)
    table, frame = _frame(ws, loop, current, routing)
    seen = returning_units(ws, loop, current)
    returning = frame["unit"].isin(seen).to_numpy()
    frame = frame[~returning]
    holdout = next(a["route"] for a in current.arms if a["role"] == "holdout")
    results = measure_round(frame, routing, holdout, loop.settings["control"], spec.metrics, loop_rules(loop.settings))
    held = results["arms"][holdout]
    thin = [m for m, c in held["metrics"].items() if c["value"] is None]
    if thin:
        left_out = f" ({int(returning.sum()):,} units served in an earlier round left out)" if returning.any() else ""
        raise DataError(f"round {current.round}: the holdout has {held['units']:,} units{left_out} but too few "
                        f"outcomes of {', '.join(thin)} to compare against", _wait_hint(loop.name))
    empty = {a["route"]: results["arms"][a["route"]] for a in current.arms
             if a["role"] != "holdout" and not results["arms"][a["route"]]["measured"]}
    if empty and not abandon_empty:
        detail = "; ".join(f"{r} has {e['units']:,} units and " + ", ".join(f"{c['n']} outcomes of {m}" for m, c in e["metrics"].items())
                           for r, e in empty.items())
        raise DataError(f"round {current.round}: {len(empty)} arm(s) cannot be measured yet ({detail})",
                        _wait_hint(loop.name) + ", or pass --abandon-empty to complete the round without them "
                        "(their Ax trials are marked abandoned)")
    objectives = loop.settings["objectives"]
    for arm in current.arms:
        if arm["role"] == "holdout":
            continue
        got = results["arms"][arm["route"]]
        if arm["route"] in empty:
            space.abandon(arm["trial"])
            got["abandoned"] = True
            continue
        measured = Measurement(
            objectives={m: (spec.metrics[m].sign * got["metrics"][m]["lift"]["estimate"], got["metrics"][m]["lift"]["se"])
                        for m in objectives},
            harms={m: (h["estimate"], h["se"]) for m, h in got["harms"].items()})
        space.tell(arm["trial"], measured)
        got["agreement"] = offline_agreement(arm, got, {m: float(meta.sign) for m, meta in spec.metrics.items()})
    results["log"] = {**table.summary(), "returning_units": int(returning.sum()),
                      "note": "outcomes of units with no decision in this round (another round's, or unknown units) are "
                      "not used; units the loop served in an earlier round (returning_units) are left out"}
    ws.save_round(loop.name, space.state(), current.round, results=results, expect_status="open")
    say(f"round {current.round} completed: {results['rows']:,} units, "
        f"{sum(1 for a in current.arms if a['role'] != 'holdout') - len(empty)} arms measured and told to Ax")


def returning_units(ws: Workspace, loop: Any, current: Any) -> set[str]:
    """Units the loop's policy decided in a version before ``current``'s round (an earlier round, or an arm promoted
    in between): their outcomes may carry that decision's effect, so the round does not measure them."""
    log = ws.read_decisions(experiment=loop.experiment, policy=loop.policy)
    return set(log.loc[log["version"] < current.policy_version, "unit"])


def _wait_hint(name: str) -> str:
    return (f"outcomes arrive after decisions: wait for more traffic and outcomes, then run `pex online complete "
            f"{name}` again")


def status(ws: Workspace, experiment: str) -> dict[str, Any]:
    """The loop: settings, rounds (arms, lifts with CIs, guardrail verdicts, offline evidence), the Pareto front of
    the certified arms of every round, the best so far by :func:`pex.online.choice.choose_best`, and what is live."""
    from pex.search.pareto import pareto_indices

    loop = ws.get_loop(experiment)
    rounds = ws.rounds(experiment)
    s = loop.settings
    spec = experiment_spec(ws, loop.experiment)
    signs, primary = _signs(loop, spec), _primary(s, spec)
    plan = AlphaSpending.of(s)
    best = choose_best(rounds, signs, primary, plan.round_alpha)
    done = [r for r in rounds if r.status == "complete"]
    # every round at its own share of the budget: the front's arms are certified jointly within alpha
    judged = [row for r in done for row in judge_round(r, signs, primary, plan.round_alpha(r.round))]
    front = []
    if judged:
        objectives = np.array([[row["objectives"][m] for m in s["objectives"]] for row in judged])
        feasible = np.array([row["certified"] for row in judged])
        front = [{"round": judged[i]["round"], "route": judged[i]["route"], "objectives": judged[i]["objectives"]}
                 for i in pareto_indices(objectives, feasible)]
    live = ws.live_versions().get(loop.policy)
    serving = next((r.round for r in rounds if r.policy_version == live), None)
    return {"name": loop.name, "experiment": loop.experiment, "policy": loop.policy, "settings": s,
            "spending": plan.to_dict(len(done)),
            "live_version": live, "live_round": serving, "rounds": [r.to_dict() for r in rounds],
            "judged": judged, "pareto": front, "best": best, "created_at": loop.created_at.isoformat()}


def promote(ws: Workspace, experiment: str, arm: str | None = None, force: bool = False,
            actor: str | None = None) -> dict[str, Any]:
    """Publish the best arm so far (or ``arm``: a route name, ``rR-aI``, or ``control``) under the loop's stable name;
    the release records ``actor`` (default: who is at this terminal)."""
    info = status(ws, experiment)
    loop = ws.get_loop(experiment)
    best = info["best"]
    rows = {r["route"]: r for r in info["judged"]}  # an arm measured twice (a champion): its newest measurement
    pick = (best["chosen"] or {}).get("route")  # the pick holds the certification of its round (pex.online.choice)
    if arm is None:
        chosen = best["chosen"]
        route = chosen["route"] if chosen else "control"
    else:
        route = arm if arm in rows or arm == "control" else f"{loop.policy}-{arm}"
        if route not in rows and route != "control":
            raise NotFoundError(f"no measured arm {arm!r} in {experiment!r}'s loop",
                                "arms: " + (", ".join(sorted(rows)) or "none measured yet") + ", or control")
        if route not in ("control", pick) and not rows[route]["certified"] and not force:
            row, plan = rows[route], info["spending"]
            missed = ", ".join(f"{m} bound {h['upper']:+.4g} over its limit {h['limit']:+.4g}"
                               for m, h in row["harms"].items() if h["verdict"] != "pass")
            raise PexError(f"arm {route} is not certified under the loop's error control: {missed} at the one-sided "
                           f"{row['level']:.4g} level (round {row['round']}'s {row['round_alpha']:.4g} of the loop's "
                           f"{plan['alpha']:g} budget over {plan['rounds']} rounds, Bonferroni over its {row['family']} arms)",
                           "promote without ARM (the pick, or control), or pass --force to publish it uncertified "
                           "(recorded in its lineage)")
    if route == "control":
        record = ws.get_policy(rounds_holdout(ws, experiment))
    else:
        record = ws.get_policy(rows[route]["policy"], rows[route]["version"])
    doc = {**record.document}
    doc["name"] = loop.policy
    doc["lineage"] = {**(doc.get("lineage") or {}), "promoted_from": {"route": route, "policy": record.name,
                                                                       "version": record.version,
                                                                       "certified": route in ("control", pick)
                                                                       or rows[route]["certified"],
                                                                       "spending": info["spending"]}}
    stored = ws.put_policies(loop.experiment, [(doc, None)], fit_id=record.fit_id)[0]
    release = publish(ws, loop.policy, stored.version, actor)
    return {"promoted": route, "policy": loop.policy, "version": stored.version, "release": release.to_dict(),
            "why": best["why"] if arm is None else f"{route}, chosen by hand", "best": best}


def rounds_holdout(ws: Workspace, experiment: str) -> str:
    """The newest round's holdout policy name (all-control with the loop's exploration)."""
    last = ws.rounds(experiment)[-1]
    return next(a["policy"] for a in last.arms if a["role"] == "holdout")
