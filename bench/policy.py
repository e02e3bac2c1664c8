"""Decisions per second of the vectorised policy evaluator (pex.policy).

Usage: .venv/bin/python bench/policy.py [--n 1000000] [--repeat 5] [--value-n 200000]

Evaluates the example depth-3 tree policy (policies/notification_cadence-tree-example.json,
with a categorical test) on simulated units, in-process, and prints the best
of several runs for greedy arms, full action distributions and sampled decisions.
Then fits effect models on a 50k-unit simulated experiment (the demo's size),
builds the value-model policy from them, reloads it from its JSON document and
stored model files, and measures its decisions per second the same way.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from pex.experiment.simulate import simulate
from pex.policy.base import Policy


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
    ap.add_argument("--value-n", type=int, default=200_000)
    args = ap.parse_args()
    doc = json.loads((Path(__file__).resolve().parent.parent / "policies" / "notification_cadence-tree-example.json").read_text())
    policy = Policy.from_document(doc)
    data = simulate(args.n, seed=0, n_noise=0).data
    print(f"tree policy {policy.name!r}, {args.n:,} units (best of {args.repeat}):")
    print(f"  greedy arms          {best_rate(lambda: policy.greedy_arms(data), args.n, args.repeat):>14,.0f} decisions/s")
    print(f"  action probabilities {best_rate(lambda: policy.action_probabilities(data), args.n, args.repeat):>14,.0f} units/s")
    print(f"  sampled decisions    {best_rate(lambda: policy.decide(data, data['user_id']), args.n, args.repeat):>14,.0f} decisions/s")
    value_policy(args.value_n, args.repeat)


def value_policy(n: int, repeat: int) -> None:
    import tempfile

    from pex.experiment.data import load_dataset
    from pex.experiment.spec import load_spec
    from pex.hte.learners import fit_effects
    from pex.hte.model import EffectModel
    from pex.policy.value import build_value_policy

    with tempfile.TemporaryDirectory() as d:
        dataset = load_dataset(load_spec(simulate(50_000, seed=1).write(d, name="bench")))
    t = time.perf_counter()
    fit = fit_effects(dataset, holdout=0.25)
    fit_s = time.perf_counter() - t
    train = dataset.frame.set_index(dataset.spec.unit).loc[fit.units].reset_index()
    built, _ = build_value_policy(name="bench-value", spec=dataset.spec, model=fit.model, frame=train, fit_id="bench",
                                  exploration=0.05)
    files = fit.model.to_files()
    policy = Policy.from_json(json.dumps(built.to_document()), lambda vm: EffectModel.from_files(files.__getitem__))
    data = simulate(n, seed=3, n_noise=8).data
    trees = len(fit.model.boosters)
    print(f"value policy over {trees} LightGBM boosters (fit on 50k units in {fit_s:.1f}s), {n:,} units (best of {repeat}):")
    # the effect model keeps its last predictions (pex.hte.model.MEMO_ENTRIES): without forgetting them, every run
    # after the first would time a memo lookup, not the boosters a service runs for new units
    def cold(fn):
        return lambda: (policy.model._memo.clear(), fn())

    print(f"  greedy arms          {best_rate(cold(lambda: policy.greedy_arms(data)), n, repeat):>14,.0f} decisions/s")
    print(f"  sampled decisions    {best_rate(cold(lambda: policy.decide(data, data['user_id'])), n, repeat):>14,.0f} "
          "decisions/s")


if __name__ == "__main__":
    main()
