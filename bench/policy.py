"""Decisions per second of the vectorised policy evaluator (pex.policy).

Usage: .venv/bin/python bench/policy.py [--n 1000000] [--repeat 5]

Evaluates the example depth-3 tree policy (policies/notification_cadence-tree-example.json,
with a categorical test) on simulated units, in-process, and prints the best
of several runs for greedy arms, full action distributions and sampled decisions.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from pex.policy import Policy
from pex.simulate import simulate


def best_rate(fn, n: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return n / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    doc = json.loads((Path(__file__).resolve().parent.parent / "policies" / "notification_cadence-tree-example.json").read_text())
    policy = Policy.from_document(doc)
    data = simulate(args.n, seed=0, n_noise=0).data
    rng = np.random.default_rng(0)
    print(f"tree policy {policy.name!r}, {args.n:,} units (best of {args.repeat}):")
    print(f"  greedy arms          {best_rate(lambda: policy.greedy_arms(data), args.n, args.repeat):>14,.0f} decisions/s")
    print(f"  action probabilities {best_rate(lambda: policy.action_probabilities(data), args.n, args.repeat):>14,.0f} units/s")
    print(f"  sampled decisions    {best_rate(lambda: policy.decide(data, rng), args.n, args.repeat):>14,.0f} decisions/s")


if __name__ == "__main__":
    main()
