"""The online loop against the simulator's truth: Ax, random search and the offline pick, with the same live arms.

For each seed the benchmark simulates an offline experiment, ingests and fits it, and then runs the online loop
(:mod:`pex.services.online`) for ``--rounds`` rounds of ``--arms`` candidates and a control holdout, with
``--units`` simulated users per round played through a :class:`pex.services.serving.PolicyServer` (the same
decide, decision log and outcomes path as over HTTP, in process; ``tests/online/test_online_http.py`` drives it over
gunicorn). Three searchers share round 1, the offline Pareto candidates (``--from-offline``, the first of them the
champion; ``--cold``: Ax's quasi-random points instead):

* **ax**: Ax's Bayesian optimization (``method="fast"``) from round 2, on the live measurements only;
* **random**: Ax's quasi-random ``random_search`` from round 2, as many live arms;
* **offline**: no live search: the offline search's best candidate on the primary metric, shipped as is.

After every round the loop's promotion rule (:mod:`pex.online.choice`: guardrails certified at the round's share
of the loop's 5% budget, split over its ``--rounds`` planned rounds and Bonferroni-adjusted over every arm measured;
primary gain's lower bound above 0; a champion kept unless a challenger is significantly better than it) picks a
policy, and the benchmark measures that
pick on a fresh draw of ``--truth-units`` users whose expected outcomes under every arm are known. A pick's
**score** is its true primary gain over all-control when it truly keeps every guardrail, else 0 (and it counts as
a violation). The **best achievable** is the largest true gain, among policies that truly keep every guardrail,
of the same value-model family on the same fit: ``--reference`` quasi-random configurations of the search space,
plus every configuration any searcher served. Printed: per round the mean score as a share of the best
achievable, per searcher, and the violations.

    .venv/bin/python bench/online.py                   # 5 seeds, 5 rounds x 4 arms, 40k users per round (segment_harm)
    .venv/bin/python bench/online.py --cold            # the same without the offline start: a search from scratch
    .venv/bin/python bench/online.py --seeds 1 --rounds 2 --units 8000 --reference 16   # a quick look
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import qmc

from pex.cli.main import main as pex
from pex.experiment.simulate import SCENARIOS, SimulatedExperiment, simulate
from pex.experiment.truth import distribution_truth
from pex.policy.base import Policy
from pex.services import online
from pex.services.decision_log import DecisionLog
from pex.services.models import effect_model_by_id
from pex.services.policies import load_fit
from pex.services.serving import PolicyServer
from pex.store.workspace import Workspace

NAME = "exp"
TRUTH_SEED = 2_026_000_777
SEARCHERS = ("ax", "random")


class TruthOracle:
    """True values of policies on a fresh population; a value policy's effect predictions are computed once."""

    def __init__(self, sim: SimulatedExperiment, model: Any, fit: str) -> None:
        self.sim, self.fit = sim, fit
        self.effects = model.effect(model.encoder.transform(sim.data, strict=False))

    def of(self, policy: Policy | None) -> dict[str, Any]:
        """Truth of ``policy`` (None: all-control): gain, harms, whether it keeps every guardrail, and its score."""
        sim, k = self.sim, len(self.sim.arms)
        if policy is None:
            greedy, e = np.full(len(sim.data), sim.arms.index(sim.control)), 0.0
        else:
            ours = policy.kind == "value" and policy.value_model["fit"] == self.fit  # else it predicts for itself
            labels = np.asarray(policy.arms)[policy.greedy_arms(sim.data, effects=self.effects if ours else None)]
            greedy, e = np.array([sim.arms.index(a) for a in labels]), policy.exploration
        probs = np.full((len(sim.data), k), e / k)
        probs[np.arange(len(sim.data)), greedy] += 1.0 - e
        t = distribution_truth(probs, sim)
        return {"gain": t["gain"], "harm": t["harm"], "keeps": not t["exceeds"], "score": t["gain"] if not t["exceeds"] else 0.0}


def traffic(ws: Workspace, sim: SimulatedExperiment, policy: str, missing: float, seed: int) -> int:
    """Play ``sim``'s users against ``policy`` in process: decisions (logged) and their true outcomes."""
    server = PolicyServer(ws, DecisionLog(ws.append_decisions)).start()
    metrics = list(sim.metrics)
    data = sim.data
    features = [c for c in data.columns if c not in ("user_id", "arm", *metrics)]
    sent = data[features].astype(object).where(data[features].notna(), None).to_dict("records")
    arms = []
    try:
        for start in range(0, len(data), 5_000):
            units = [{"unit": u, "features": f} for u, f in zip(data["user_id"][start:start + 5_000], sent[start:start + 5_000])]
            arms += [d["arm"] for d in server.decide_batch(policy, {"units": units})["decisions"]]
    finally:
        server.close()
    arms = np.asarray(arms)
    report = np.random.default_rng(seed).uniform(size=len(data)) >= missing
    records = []
    for m in metrics:
        values = np.select([arms == a for a in sim.arms], [sim.truth.outcomes[m][a] for a in sim.arms])
        records += [(u, m, float(v)) for u, v, r in zip(data["user_id"], values, report) if r]
    ws.put_outcomes(NAME, records)
    return len(data)


def chosen_policy(ws: Workspace, status: dict[str, Any]) -> Policy | None:
    """The promotion rule's pick (None: control), loaded with its effect model."""
    chosen = status["best"]["chosen"]
    if chosen is None:
        return None
    record = ws.get_policy(chosen["policy"], chosen["version"])
    return Policy.from_document(record.document, lambda vm: effect_model_by_id(ws, vm["fit"]))


def run_searcher(base: Path, searcher: str, args: argparse.Namespace, seed: int, truth: TruthOracle) -> dict[str, Any]:
    """One loop on a copy of the fitted workspace; the truth of the pick after every round."""
    import shutil

    home = base / f"ws-{searcher}"
    shutil.copytree(base / "ws", home)
    ws = Workspace(home)
    options = online.LoopOptions(arms=args.arms, holdout=args.holdout, from_offline=not args.cold, seed=seed,
                                 method="fast" if searcher == "ax" else "random_search", rounds=args.rounds)
    started = time.perf_counter()
    status = online.start_loop(ws, NAME, options)
    curve, points = [], []
    for r in range(1, args.rounds + 1):
        users = simulate(args.units, scenario=args.scenario, seed=seed * 1000 + r)
        users.data["user_id"] = [f"{searcher}-r{r}-{i}" for i in range(args.units)]
        traffic(ws, users, f"{NAME}-online", args.missing, seed * 1000 + r)
        status = online.complete_round(ws, NAME, next_round=r < args.rounds)
        picked = chosen_policy(ws, status)
        t = truth.of(picked)
        curve.append({**t, "pick": status["best"]["chosen"]["route"] if picked is not None else "control"})
        print(f"  seed {seed} {searcher} round {r}: pick {curve[-1]['pick']}, true gain {t['gain']:+.4f}"
              f"{'' if t['keeps'] else ' BREAKS A GUARDRAIL'}", file=sys.stderr)
    for rnd in status["rounds"]:
        points += [a["point"] for a in rnd["arms"] if a["role"] == "candidate"]
    ws.close()
    return {"curve": curve, "points": points, "seconds": time.perf_counter() - started}


def best_achievable(ws: Workspace, points: list[list[float]], truth: TruthOracle, reference: int, seed: int) -> dict[str, Any]:
    """The best true score over ``reference`` quasi-random configurations and ``points``, built on the fit as the loop builds arms."""
    ctx = load_fit(ws, NAME)
    dim = len(ctx.dataset.spec.metrics) + 1
    grid = qmc.Sobol(d=dim, scramble=True, seed=seed).random(reference).tolist() if reference else []
    best, best_point = 0.0, None
    for i, point in enumerate([*grid, *points]):
        policy, _setting = online.candidate_policy(ctx, point, f"ref-{i}", 0.05, {})
        t = truth.of(policy)
        if t["score"] > best:
            best, best_point = t["score"], point
    return {"gain": best, "point": best_point, "configurations": len(grid) + len(points)}


def run_seed(seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """Every searcher on one simulated experiment."""
    with tempfile.TemporaryDirectory() as folder:
        base = Path(folder)
        simulate(args.offline_units, scenario=args.scenario, seed=seed).write(base / "data", name=NAME)
        for argv in (["ingest", str(base / "data" / f"{NAME}.toml")], ["fit", NAME, "--seed", str(seed)]):
            assert pex(["--home", str(base / "ws"), *argv]) == 0, argv
        ws = Workspace(base / "ws")
        ctx = load_fit(ws, NAME)
        truth = TruthOracle(simulate(args.truth_units, scenario=args.scenario, seed=TRUTH_SEED + seed), ctx.model, ctx.record.id)
        offline = online.offline_candidates(ctx, online.LoopOptions(arms=args.arms, seed=seed), lambda m: None)
        first, _evidence = offline[0]
        offline_pick = truth.of(online.candidate_policy(ctx, first, "offline-pick", 0.05, {})[0])
        found = {s: run_searcher(base, s, args, seed, truth) for s in SEARCHERS}
        points = [p for s in SEARCHERS for p in found[s]["points"]]
        best = best_achievable(ws, points, truth, args.reference, seed)
        ws.close()
    out = {"seed": seed, "best": best, "offline": offline_pick,
           **{s: {"curve": found[s]["curve"], "seconds": found[s]["seconds"]} for s in SEARCHERS}}
    share = {s: [c["score"] / best["gain"] if best["gain"] > 0 else float("nan") for c in found[s]["curve"]] for s in SEARCHERS}
    print(f"seed {seed}: best achievable gain {best['gain']:+.4f}; offline pick {offline_pick['score'] / best['gain']:.2f}; "
          + "; ".join(f"{s} " + " ".join(f"{v:.2f}" for v in share[s]) for s in SEARCHERS), file=sys.stderr)
    return out


def summarize(results: list[dict[str, Any]], rounds: int) -> str:
    """Per searcher and round: mean share of the best achievable (and violations), and the offline pick's."""
    def share(score: float, best: float) -> float:
        return score / best if best > 0 else float("nan")

    lines = [f"{'searcher':<10}" + "".join(f"{'round ' + str(r):>10}" for r in range(1, rounds + 1)) + f"{'seconds':>10}"]
    for s in SEARCHERS:
        row = [np.nanmean([share(res[s]["curve"][r]["score"], res["best"]["gain"]) for res in results]) for r in range(rounds)]
        bad = sum(not c["keeps"] for res in results for c in res[s]["curve"])
        secs = np.mean([res[s]["seconds"] for res in results])
        lines.append(f"{s:<10}" + "".join(f"{v:>10.2f}" for v in row) + f"{secs:>10.0f}"
                     + (f"   {bad} picks break a guardrail" if bad else ""))
    off = np.nanmean([share(res["offline"]["score"], res["best"]["gain"]) for res in results])
    bad = sum(not res["offline"]["keeps"] for res in results)
    lines.append(f"{'offline':<10}" + f"{off:>10.2f}" * rounds + (f"   {bad} offline picks break a guardrail" if bad else ""))
    lines.append(f"(mean true primary gain of the pick as a share of the best achievable, over {len(results)} seeds; "
                 f"best achievable gain {np.mean([r['best']['gain'] for r in results]):+.4f} on average)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the table (and write ``--out`` JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--arms", type=int, default=4)
    parser.add_argument("--holdout", type=float, default=0.2)
    parser.add_argument("--units", type=int, default=40_000, help="simulated users per round")
    parser.add_argument("--offline-units", type=int, default=20_000)
    parser.add_argument("--truth-units", type=int, default=100_000)
    parser.add_argument("--reference", type=int, default=64, help="quasi-random configurations behind the best achievable")
    parser.add_argument("--missing", type=float, default=0.1)
    parser.add_argument("--scenario", default="segment_harm", choices=SCENARIOS)
    parser.add_argument("--cold", action="store_true",
                        help="round 1 from Ax's quasi-random points instead of the offline candidates (no champion)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    results = [run_seed(seed, args) for seed in range(args.first_seed, args.first_seed + args.seeds)]
    print(summarize(results, args.rounds))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
