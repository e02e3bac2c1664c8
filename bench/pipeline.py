"""`pex run` end to end on three simulated scenarios and a product-export-shaped CSV.

For each experiment: wall time per pipeline stage, the verdict and the
recommended policy, and, where the simulation knows the truth, what the
recommended policy truly gains on the primary metric and truly costs on the
guardrail (computed from every unit's expected outcome under every arm).

    .venv/bin/python bench/pipeline.py            # 50,000 units each, pipeline defaults
    .venv/bin/python bench/pipeline.py --quick    # 8,000 units, small search
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

import pex
from pex.experiment.simulate import simulate, write_product_export

STAGES = ("ingest", "effects", "fit", "policies", "optimize", "recommend")


def truth_of(result, sim) -> str:
    """True sessions gain over all-control and true relative unsubscribe change of the recommended policy."""
    policy = result.policy()
    chosen = policy.greedy_arms(sim.data)

    def mean(metric: str, idx: np.ndarray) -> float:
        table = np.column_stack([sim.truth.expected[metric][a] for a in policy.arms])
        return float(table[np.arange(len(idx)), idx].mean())

    control = np.full(len(chosen), policy.arms.index(sim.truth.control))
    gain = mean("sessions", chosen) - mean("sessions", control)
    harm = mean("unsubscribes", chosen) / mean("unsubscribes", control) - 1
    return f"true sessions gain {gain:+.3f}/unit, true unsubscribes {harm:+.1%}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--units", type=int, default=50_000)
    ap.add_argument("--quick", action="store_true", help="8,000 units, Ax 8 trials, 256-point sweep")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    n = 8_000 if args.quick else args.units
    search = {"trials": 8, "dense": 256} if args.quick else {}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        cases = []
        for scenario in ("notification_cadence", "constant", "null"):
            sim = simulate(n, scenario=scenario, seed=args.seed + 1)
            cases.append((scenario, sim.write(base / scenario, name=scenario.replace("_", "-")), sim))
        cases.append(("product export CSV", write_product_export(base / "export", n=n, seed=args.seed + 1), None))
        for label, spec, sim in cases:
            started = time.perf_counter()
            result = pex.run(spec, base / f"out-{spec.stem}", home=base / "ws", seed=args.seed, **search)
            total = time.perf_counter() - started
            t = result.summary["timings"]
            rec = result.summary["recommendation"]
            fronts = result.summary["pareto"]["fronts"]
            rows.append((label, total, t, rec, fronts, truth_of(result, sim) if sim is not None else ""))
            print(f"{label}: {total:.1f}s, {rec['verdict']} -> {rec['policy']}", flush=True)
    print(f"\n`pex run` on {n:,} units per experiment (2-core machine)\n")
    print(f"{'experiment':<22}{'total':>8}" + "".join(f"{s:>10}" for s in STAGES) + "  verdict -> policy")
    for label, total, t, rec, _fronts, _truth in rows:
        print(f"{label:<22}{total:>7.1f}s" + "".join(f"{t.get(s, float('nan')):>9.1f}s" for s in STAGES)
              + f"  {rec['verdict']} -> {rec['policy']}")
    print("\nweight search (hypervolume above all-control; seconds)")
    for label, _total, _t, _rec, fronts, _truth in rows:
        print(f"  {label:<22}" + "  ".join(f"{name} {f['hypervolume']:.4g} in {f['seconds']:.1f}s" for name, f in fronts.items()))
    print("\nrecommended policy against the simulation's truth")
    for label, _total, _t, rec, _fronts, truth in rows:
        if truth:
            print(f"  {label:<22}{rec['policy']}: {truth}")


if __name__ == "__main__":
    main()
