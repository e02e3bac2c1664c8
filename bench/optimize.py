"""Quality and cost of the offline policy-weight search (pex.search.tuning): Ax vs the dense sweep.

Usage (from the repository root)::

    .venv/bin/python bench/optimize.py [--units 50000] [--seeds 3] [--trials 30,60] [--quick]

Setup (done once; the data and the fit stay fixed across search seeds): simulate
the ``notification_cadence`` scenario (``--units``, default 50,000), write it into
a temporary directory, ingest it into a temporary workspace and fit it exactly as
``pex run`` does (``fit_and_store(..., holdout=0.25)``), then build the search
problem ``TuningProblem.from_fit(load_fit(...))`` on the fit's training units.
Its objectives are the lifts of ``sessions`` (primary) and ``converted``
(secondary); ``unsubscribes`` is a guardrail with ``max_harm`` 5%. ``daily``
lifts sessions most but raises unsubscribes for long-tenure users, so feasible
policies treat only part of the population and the front is a real trade-off.

Per search seed ``s`` (``--seeds``, default 3: seeds 0, 1, 2), on that one problem:

* **ax T** - ``ax_search(problem, trials=T, batch=3, seed=s, max_seconds=120)``: Ax's
  multi-objective Bayesian optimization alone, ``T`` = 30 being the pipeline's
  default budget (``RunOptions.trials``); ``--trials 30,60`` adds budgets.
* **dense 2048** - ``dense_sweep(problem, points=2048, seed=s)``: 2,048 weight
  vectors, each valued at 32 treated-share caps (one sort and a cumulative sum
  per vector, ``TuningProblem.evaluate_caps``), so 65,536 points: the
  pipeline's scrambled-Sobol sweep (``RunOptions.dense``).
* **kept** - ``Front.merge("kept", [ax T, dense 2048])``: the front the
  pipeline keeps (its seconds are the sum of both searches).
* **dense T** - a Sobol sweep with Ax's budget (``points=T``): what Ax's
  model buys over quasi-random draws at equal evaluations (context only; same
  seed, so these are the first T points of the 2048-point sweep).
* **dense 10k (ref)** - ``dense_sweep(problem, points=10_000, seed=s + 1000)``:
  the reference front. A different seed (scramble), so it is not a superset of
  the 2048-point sweep.

One reference point per seed, ``reference_point([...every front above...])``,
is used for every hypervolume of that seed; **vs 10k** is a front's
hypervolume over the 10k sweep's. The acceptance figure is the kept front
(pipeline defaults) reaching at least 95% of the 10k sweep's hypervolume.

Timings are wall seconds of single runs (noisy on a shared 2-core machine).
Ax's and BoTorch's imports happen once before any timing and are reported
apart; **eval s** is the time ``problem.evaluate`` alone takes on the method's
weight vectors (re-run after the search), so ``seconds - eval s`` is Ax's own
modelling and candidate-generation overhead. ``ms/vector`` = seconds / points.
The **rounds** line lists, per ``get_next_trials`` round, how many weight
vectors Ax proposed and the wall seconds of that round.

``--converge N`` adds one N-point sweep (seed 999) and compares every seed's
10k reference, pipeline sweep and kept front with it and with the union of all
of them (one reference point for that table): how close the 10k target itself
is to the true front.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pex.services.run import RunOptions  # noqa: E402 - after the path tweak above

SCENARIO = "notification_cadence"
NAME = "bench"
BATCH = RunOptions().batch
AX_SECONDS = RunOptions().ax_seconds  # the pipeline's time budget for Ax
DENSE = RunOptions().dense
REFERENCE_POINTS = 10_000
REFERENCE_SEED_OFFSET = 1000
ACCEPT = 0.95
CONVERGE_SEED = 999


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "?"


def _fmt(v, digits: int = 4) -> str:
    if v is None:
        return "-"
    if isinstance(v, (float, np.floating)):
        v = float(v)
        if not math.isfinite(v):
            return str(v)
        return f"{v:.{digits}g}" if abs(v) < 1000 else f"{v:,.0f}"
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    return str(v)


def render(headers: list[str], rows: list[list], left: int = 1) -> str:
    """An aligned plain-text table; the first ``left`` columns are left-aligned."""
    cells = [[c if isinstance(c, str) else _fmt(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]

    def line(values):
        return "  ".join(v.ljust(w) if i < left else v.rjust(w) for i, (v, w) in enumerate(zip(values, widths)))

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in cells)])


def pct(x: float) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{100 * x:.1f}%"


# -- setup --------------------------------------------------------------------------------------------------------------


def prepare(n: int, data_seed: int, tmp: Path):
    """Simulate, ingest and fit into a temporary workspace; return the tuning problem and setup timings."""
    from pex.experiment.data import load_dataset
    from pex.experiment.simulate import simulate
    from pex.experiment.spec import load_spec
    from pex.search.tuning import TuningProblem
    from pex.services.fitting import fit_and_store
    from pex.services.policies import load_fit
    from pex.store.workspace import Workspace

    t = {}
    started = time.perf_counter()
    log(f"simulating {n:,} units of {SCENARIO} (seed {data_seed}) ...")
    sim = simulate(n, scenario=SCENARIO, seed=data_seed)
    spec_path = sim.write(tmp / "data", name=NAME)
    t["simulate + write"] = time.perf_counter() - started

    started = time.perf_counter()
    home = tmp / "pex-home"
    # an explicit SQLite URL: a PEX_DATABASE_URL in the environment must not receive the benchmark's rows
    ws = Workspace(home, database_url=f"sqlite:///{home / 'pex.db'}")
    spec = load_spec(spec_path)
    dataset = load_dataset(spec)
    dv = ws.put_dataset(dataset, source=str(spec.data))
    t["ingest"] = time.perf_counter() - started

    log("fitting effect models (learner auto, 25% held out) ...")
    started = time.perf_counter()
    record, _summary = fit_and_store(ws, dataset, dv, seed=data_seed, holdout=0.25)
    t["fit"] = time.perf_counter() - started

    started = time.perf_counter()
    ctx = load_fit(ws, spec.name, record.id)
    problem = TuningProblem.from_fit(ctx)
    t["load fit + problem"] = time.perf_counter() - started
    return problem, t


def warm_imports() -> float:
    """Import Ax and BoTorch's hypervolume once, so no search pays for them inside its timing."""
    from pex.search.ax_adapter import quiet_ax

    started = time.perf_counter()
    with quiet_ax():
        import ax  # noqa: F401
        from ax import Client, RangeParameterConfig  # noqa: F401
        from botorch.utils.multi_objective.hypervolume import Hypervolume  # noqa: F401
    return time.perf_counter() - started


def constant_arms(problem) -> list[list]:
    """Treat-everyone-with-one-arm rows: goal lifts and guardrail harm, from the same pseudo-outcomes the search uses."""
    index = {m: k for k, m in enumerate(problem.metrics)}
    rows = []
    for j, arm in enumerate(problem.arms):
        if arm == problem.control:
            continue
        lift = problem.signal[:, j, :].mean(axis=0)
        row = [f"all {arm}"] + [problem.goal_sign[index[m]] * lift[index[m]] for m in problem.objectives]
        for m, rule in problem.rules.items():
            harm = rule.sign * lift[index[m]] / rule.scale
            row.append(pct(harm) + (" (over)" if harm > rule.limit else ""))
        rows.append(row)
    return rows


# -- one search seed ----------------------------------------------------------------------------------------------------


def eval_seconds(problem, draws: np.ndarray) -> float:
    started = time.perf_counter()
    problem.evaluate(draws)
    return time.perf_counter() - started


def run_seed(problem, seed: int, budgets: list[int], dense: int, reference_points: int) -> dict:
    """Every method's front on ``problem`` for search seed ``seed``, with one common reference point."""
    from pex.search.ax_adapter import ax_search
    from pex.search.pareto import Front, hypervolume, reference_point
    from pex.search.tuning import dense_sweep

    fronts: dict[str, Front] = {}
    eval_s: dict[str, float] = {}
    rounds: dict[str, list[tuple[int, float]]] = {}
    for trials in budgets:
        log(f"seed {seed}: Ax, {trials} trials in batches of {BATCH} ...")
        marks = Rounds()
        f = ax_search(problem, trials=trials, batch=BATCH, seed=seed, say=marks, max_seconds=AX_SECONDS)
        fronts[f"ax {trials}"] = f
        eval_s[f"ax {trials}"] = eval_seconds(problem, f.draws)
        rounds[f"ax {trials}"] = marks.rounds
    log(f"seed {seed}: dense sweep, {dense:,} points ...")
    fronts[f"dense {dense}"] = dense_sweep(problem, points=dense, seed=seed)
    for trials in budgets:
        fronts[f"kept (ax {trials} + dense {dense})"] = Front.merge("kept", [fronts[f"ax {trials}"], fronts[f"dense {dense}"]])
    for trials in budgets:
        fronts[f"dense {trials} (Ax's budget)"] = dense_sweep(problem, points=trials, seed=seed)
    log(f"seed {seed}: reference dense sweep, {reference_points:,} points (seed {seed + REFERENCE_SEED_OFFSET}) ...")
    ref_name = f"dense {reference_points:,} (ref)"
    fronts[ref_name] = dense_sweep(problem, points=reference_points, seed=seed + REFERENCE_SEED_OFFSET)
    for name, f in fronts.items():
        if name.startswith("dense"):
            eval_s[name] = f.seconds  # the sweep is nothing but evaluation (plus drawing Sobol points)
    reference = reference_point(list(fronts.values()))
    for f in fronts.values():
        f.hypervolume = hypervolume(f.front, reference)
    ref_hv = fronts[ref_name].hypervolume
    ratios = {name: (f.hypervolume / ref_hv if ref_hv > 0 else float("nan")) for name, f in fronts.items()}
    return {"seed": seed, "fronts": fronts, "eval_s": eval_s, "reference": reference, "ratios": ratios, "ref_name": ref_name,
            "rounds": rounds}


class Rounds:
    """``say`` callback of ax_search: (weight vectors proposed, seconds) per round, from its "Ax: done/trials" messages."""

    def __init__(self) -> None:
        self.rounds: list[tuple[int, float]] = []
        self._done, self._t = 0, time.perf_counter()

    def __call__(self, message: str) -> None:
        match = re.match(r"Ax: (\d+)/\d+", message)
        if not match:
            return
        now, done = time.perf_counter(), int(match.group(1))
        self.rounds.append((done - self._done, now - self._t))
        self._done, self._t = done, now


def front_rows(problem, res: dict) -> list[list]:
    rows = []
    for name, f in res["fronts"].items():
        k = len(f.draws)
        treated = f.treated_share[f.pareto]
        rows.append([name, k, int(f.feasible.sum()), len(f.pareto), round(f.seconds, 2), 1000 * f.seconds / k,
                     f.hypervolume, pct(res["ratios"][name]), pct(float(treated.max())) if len(treated) else "-"])
    return rows


def extremes(problem, res: dict) -> list[list]:
    """The reference front's best point on each objective, and the best sessions lift ignoring the guardrail."""
    f = res["fronts"][res["ref_name"]]
    rows = []
    for j, m in enumerate(problem.objectives):
        if f.feasible.any():
            feas = np.flatnonzero(f.feasible)
            i = feas[np.argmax(f.objectives[feas, j])]
            rows.append([f"feasible, best {m}", *f.objectives[i], *(pct(h) for h in f.harms[i]), pct(f.treated_share[i])])
    i = int(np.argmax(f.objectives[:, 0]))
    rows.append([f"any, best {problem.objectives[0]}", *f.objectives[i], *(pct(h) for h in f.harms[i]), pct(f.treated_share[i])])
    return rows


def check_reference(problem, results: list[dict], points: int, dense: int):
    """Each seed's reference sweep, pipeline sweep and kept front against one big sweep and the union of everything."""
    from pex.search.pareto import Front, hypervolume, reference_point
    from pex.search.tuning import dense_sweep

    log(f"convergence check: dense sweep, {points:,} points (seed {CONVERGE_SEED}) ...")
    big = dense_sweep(problem, points=points, seed=CONVERGE_SEED)
    named: dict[str, Front] = {f"dense {points:,} (seed {CONVERGE_SEED})": big}
    for res in results:
        for name, f in res["fronts"].items():
            if name == res["ref_name"] or name.startswith("kept") or name == f"dense {dense}":
                named[f"seed {res['seed']}: {name}"] = f
    union = Front.merge("union", list(named.values()))
    reference = reference_point([*named.values(), union])
    hv_big, hv_union = hypervolume(big.front, reference), hypervolume(union.front, reference)
    rows = []
    for name, f in [*named.items(), ("union of all above", union)]:
        hv = hypervolume(f.front, reference)
        rows.append([name, len(f.draws), len(f.pareto), hv, pct(hv / hv_big if hv_big > 0 else float("nan")),
                     pct(hv / hv_union if hv_union > 0 else float("nan"))])
    return big, rows, reference


# -- main ---------------------------------------------------------------------------------------------------------------


def parse_seeds(text: str) -> list[int]:
    if "," in text:
        return [int(s) for s in text.split(",") if s.strip()]
    return list(range(int(text)))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--units", type=int, default=None, help="simulated units (default 50,000; 10,000 with --quick)")
    p.add_argument("--seeds", default=None,
                   help="search seeds: N for 0..N-1, or a comma list such as 4,7 ('7,' for seed 7 alone) (default 3; 1 with --quick)")
    p.add_argument("--trials", default=None, help="Ax budgets, comma-separated; the first is the headline (default 30; 10 with --quick)")
    p.add_argument("--dense", type=int, default=DENSE, help=f"points of the pipeline's dense sweep (default {DENSE})")
    p.add_argument("--reference-points", type=int, default=REFERENCE_POINTS,
                   help=f"points of the reference sweep (default {REFERENCE_POINTS:,})")
    p.add_argument("--converge", type=int, default=0,
                   help="also run one sweep of this many points (e.g. 40000) to check how far the 10k reference is from converged")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the simulation and of the fit (default 0)")
    p.add_argument("--quick", action="store_true", help="smoke run: 10,000 units, 1 seed, 10 Ax trials")
    args = p.parse_args(argv)
    n = args.units or (10_000 if args.quick else 50_000)
    seeds = parse_seeds(args.seeds or ("1" if args.quick else "3"))
    budgets = [int(t) for t in (args.trials or ("10" if args.quick else "30")).split(",") if t.strip()]
    if not seeds or not budgets or min(budgets) < 1:
        p.error("need at least one seed and positive Ax budgets")
    total_started = time.perf_counter()

    with tempfile.TemporaryDirectory(prefix="pex-bench-optimize-") as tmp:
        problem, setup = prepare(n, args.data_seed, Path(tmp))
        setup["import ax + botorch"] = warm_imports()
        results = [run_seed(problem, s, budgets, args.dense, args.reference_points) for s in seeds]
        converge = check_reference(problem, results, args.converge, args.dense) if args.converge else None

    out = []
    say = out.append
    head = budgets[0]
    kept_name = f"kept (ax {head} + dense {args.dense})"
    ax_name, dense_name = f"ax {head}", f"dense {args.dense}"
    say("pex weight-search benchmark (pex.search.tuning): Ax vs the dense sweep vs a 10k-point reference sweep")
    say(f"python {sys.version.split()[0]}, numpy {_version('numpy')}, ax-platform {_version('ax-platform')}, "
        f"botorch {_version('botorch')}, torch {_version('torch')}")
    say(f"scenario {SCENARIO}: {n:,} simulated units (data/fit seed {args.data_seed}), search on {problem.n:,} training units "
        f"(25% held out); arms {', '.join(problem.arms)}")
    rails = ", ".join(f"{m} (limit {pct(rule.limit)}, {rule.basis})" for m, rule in problem.rules.items())
    say(f"objectives (lift over all-control, maximised): {', '.join(problem.objectives)}; guardrail: {rails}; "
        f"search dimension {problem.dimension} (weights of {', '.join(problem.metrics)} + treated-share cap)")
    say(f"Ax budgets {', '.join(map(str, budgets))} trials in batches of {BATCH}; dense sweep {args.dense:,}; "
        f"reference sweep {args.reference_points:,} (seed s+{REFERENCE_SEED_OFFSET}); search seeds {', '.join(map(str, seeds))}")
    say("setup seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in setup.items()))
    say("")
    say("The trade-off (treat everyone with one arm; harm = relative rise of the guardrail, training pseudo-outcomes):")
    say(render(["policy", *problem.objectives, *(f"{m} harm" for m in problem.rules)], constant_arms(problem)))
    say("")

    for res in results:
        say(f"== search seed {res['seed']}: reference point "
            + ", ".join(f"{m} {_fmt(v)}" for m, v in zip(problem.objectives, res["reference"])) + " ==")
        say(render(["method", "points", "feasible", "Pareto", "seconds", "ms/vector", "hypervolume", "vs 10k", "max treated"],
                   front_rows(problem, res)))
        say("reference sweep's extremes:")
        say(render(["point", *problem.objectives, *(f"{m} harm" for m in problem.rules), "treated"], extremes(problem, res)))
        say("timing, Ax vs dense (eval s: problem.evaluate alone on the same weight vectors):")
        rows = []
        for name in [*(f"ax {t}" for t in budgets), dense_name, *(f"dense {t} (Ax's budget)" for t in budgets)]:
            f = res["fronts"][name]
            k = len(f.draws)
            e = res["eval_s"][name]
            rows.append([name, k, round(f.seconds, 3), 1000 * f.seconds / k, round(e, 3), 1000 * e / k, round(f.seconds - e, 3)])
        say(render(["method", "points", "seconds", "ms/vector", "eval s", "eval ms/vector", "overhead s"], rows))
        for name, marks in res["rounds"].items():
            if marks:
                say(f"{name} rounds (weight vectors proposed: seconds, Ax's modelling + evaluation): "
                    + ", ".join(f"{k}: {sec:.1f}s" for k, sec in marks))
        ax_f, dn_f = res["fronts"][ax_name], res["fronts"][dense_name]
        say(f"Ax {head} trials took {ax_f.seconds:.2f}s ({1000 * ax_f.seconds / len(ax_f.draws):.1f} ms/vector); "
            f"the {args.dense:,}-point sweep {dn_f.seconds:.2f}s ({1000 * dn_f.seconds / len(dn_f.draws):.2f} ms/vector): "
            f"Ax is {(ax_f.seconds / len(ax_f.draws)) / (dn_f.seconds / len(dn_f.draws)):,.0f}x more per vector and "
            f"{ax_f.seconds / dn_f.seconds:.1f}x the sweep's total time")
        say("")

    names = [n_ for n_ in results[0]["fronts"] if n_ != results[0]["ref_name"]]
    rows = []
    for name in names:
        r = np.array([res["ratios"][name] for res in results])
        s = np.array([res["fronts"][name].seconds for res in results])
        rows.append([name, pct(float(r.mean())), pct(float(r.min())), pct(float(r.max())),
                     f"{int((r >= ACCEPT).sum())}/{len(r)}", round(float(s.mean()), 2)])
    say(f"Summary over {len(results)} search seed(s): hypervolume / 10k sweep's hypervolume (same seed, same reference point)")
    say(render(["method", "mean", "min", "max", f">= {ACCEPT:.0%}", "mean s"], rows))
    say("")
    if converge is not None:
        big, table, reference = converge
        say(f"Is the 10k reference converged? Every seed's sweeps against one {len(big.draws):,}-point sweep (seed {CONVERGE_SEED}) "
            f"and the union of all of them ({big.seconds:.0f}s for the big sweep); one reference point for this table: "
            + ", ".join(f"{m} {_fmt(v)}" for m, v in zip(problem.objectives, reference)))
        say(render(["front", "points", "Pareto", "hypervolume", "vs big sweep", "vs union"], table))
        say("")
    kept = np.array([res["ratios"][kept_name] for res in results])
    axr = np.array([res["ratios"][ax_name] for res in results])
    dnr = np.array([res["ratios"][dense_name] for res in results])
    ok = bool((kept >= ACCEPT).all())
    say(f"ACCEPTANCE (kept front with pipeline defaults, Ax {head} + dense {args.dense:,}, >= {ACCEPT:.0%} of the 10k sweep's "
        f"hypervolume at every seed): {'MET' if ok else 'NOT MET'} - mean {pct(float(kept.mean()))}, min {pct(float(kept.min()))}")
    say(f"Ax alone ({head} trials): mean {pct(float(axr.mean()))}, min {pct(float(axr.min()))} of the 10k sweep's hypervolume "
        f"({'reaches' if (axr >= ACCEPT).all() else 'does NOT reach'} {ACCEPT:.0%} at every seed); "
        f"dense {args.dense:,} alone: mean {pct(float(dnr.mean()))}, min {pct(float(dnr.min()))}")
    if head != 30 or args.dense != DENSE:
        say(f"(note: the pipeline's default is the dense sweep alone ({DENSE:,} vectors; Ax only with --trials, "
            f"at most {AX_SECONDS:g} s); this run used Ax {head} + dense {args.dense:,})")
    say(f"total wall time {time.perf_counter() - total_started:.0f}s")
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
