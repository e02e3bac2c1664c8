"""Do recommended policies truly keep their guardrails? `pex run` against the simulator's truth.

For each (size, scenario, seed) the benchmark simulates an experiment, runs the whole
pipeline on it (``pex.run``) and measures the recommended policy on a fresh draw of
200,000 units of the same scenario, where every unit's expected outcome under every arm
is known:

* its true harm on each guardrail, and whether any exceeds ``max_harm`` (the failure the
  guardrail logic exists to prevent: the estimate said "within", the truth says "beyond");
* its true primary gain vs all-control as a share of the constrained oracle's gain (the best
  policy under the truth that keeps every guardrail, :func:`pex.experiment.truth.constrained_oracle`);
  0 when the recommendation keeps control;
* whether the recommendation said it cannot certify the guardrails, its kind and run time;
* the certification ceiling (:func:`pex.experiment.truth.certification_ceiling`): the gain to expect, as a
  share of the oracle's, from testing the oracle's own policies safest first on as many units as the
  pipeline certifies on (every unit when cross-fitted, the default; the held-out share with
  ``--no-crossfit``), knowing every true effect. No procedure that certifies on those units can be
  expected to do much better, so it says how much of the gap to the oracle is the price of certifying.

It prints one line per experiment to stderr and, at the end, tables per size and per
scenario (share truly beyond the limit with a Wilson 95% interval, mean gain share, shares
of "cannot certify" and of personalized / arm / control recommendations, mean seconds).

    .venv/bin/python bench/guardrails.py                      # 36 experiments per size at 10k, 20k, 50k units
    .venv/bin/python bench/guardrails.py --quick              # 3 experiments at 10k (one per scenario)
    .venv/bin/python bench/guardrails.py --per-size 12 --sizes 20000 --out guardrails.json

A pipeline run takes about 10-60 s on two cores, so the default run takes one to two hours.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pex.evaluation.recommendation import CERTIFICATIONS
from pex.experiment.simulate import SCENARIOS, SimulatedExperiment, simulate
from pex.experiment.truth import certification_ceiling, constrained_oracle, policy_truth

DEFAULT_SIZES = (10_000, 20_000, 50_000)
DEFAULT_SCENARIOS = ("segment_harm", "aligned_harm", "notification_cadence")
DEFAULT_PER_SIZE = 36  # 12 per scenario and size: 108 experiments at the default sizes
TRUTH_UNITS = 200_000
TRUTH_SEED = 2_026_000_001  # the fresh draw's seed; experiment seeds count up from --seed and never reach it
CATEGORIES = ("personalized", "arm", "control")
Progress = Callable[[str], None]


@dataclass(frozen=True)
class Case:
    """One experiment of the benchmark: how many units, which scenario, which seed (data and pipeline)."""

    size: int
    scenario: str
    seed: int


@dataclass
class Reference:
    """A scenario's population stand-in: a large fresh draw and the constrained oracle on it."""

    sim: SimulatedExperiment
    oracle: dict[str, Any]
    ceilings: dict[int, dict[str, Any]] = field(default_factory=dict)  # by held-out units

    def ceiling(self, n_eval: int) -> dict[str, Any]:
        """:func:`pex.experiment.truth.certification_ceiling` for ``n_eval`` held-out units (computed once)."""
        if n_eval not in self.ceilings:
            self.ceilings[n_eval] = certification_ceiling(self.sim, n_eval, exploration=self.oracle["exploration"])
        return self.ceilings[n_eval]


def plan(sizes: Sequence[int], per_size: int, scenarios: Sequence[str], seed: int = 0) -> list[Case]:
    """``per_size`` experiments per size, cycling over ``scenarios`` so each gets an even share.

    Every experiment has its own seed (``seed``, ``seed + 1``, ...), so no two share data.
    """
    cases: list[Case] = []
    for size in sizes:
        for i in range(per_size):
            cases.append(Case(size=int(size), scenario=scenarios[i % len(scenarios)], seed=seed + len(cases)))
    return cases


def default_exploration() -> float:
    """The exploration share the pipeline's policies are served with (the oracle is served alike)."""
    from pex.services.policies import BuildOptions

    return float(BuildOptions().exploration)


def reference(scenario: str, units: int = TRUTH_UNITS, seed: int = TRUTH_SEED, exploration: float | None = None) -> Reference:
    """A fresh draw of ``units`` units of ``scenario`` and its constrained oracle (exploration as the pipeline's)."""
    sim = simulate(units, scenario=scenario, seed=seed)
    return Reference(sim=sim, oracle=constrained_oracle(sim, default_exploration() if exploration is None else exploration))


def category(kind: str, default_arm: str, exploration: float, control: str) -> str:
    """``personalized`` (tree or value policy), ``control`` (all-control), ``arm`` (one other arm for all) or ``uniform``."""
    if kind != "constant":
        return "personalized"
    if exploration >= 1.0:  # the uniform-random baseline: neither an arm nor control (the rule should never pick it)
        return "uniform"
    return "control" if default_arm == control else "arm"


def simulate_and_run(case: Case, workdir: Path, **run_options: Any) -> tuple[Path, Any, float]:
    """Simulate ``case`` into ``workdir`` and run the whole pipeline on it (no Ax unless asked): the spec's path, the
    :class:`pex.services.run.RunResult` and the run's seconds (this benchmark's and bench/certification.py's fit)."""
    import pex

    sim = simulate(case.size, scenario=case.scenario, seed=case.seed)
    spec_path = sim.write(workdir / "exp", name=case.scenario.replace("_", "-"))
    options = {"seed": case.seed, "use_ax": False, **run_options}
    started = time.perf_counter()
    result = pex.run(spec_path, out=workdir / "out", home=workdir / "ws", **options)
    return spec_path, result, time.perf_counter() - started


def run_case(case: Case, ref: Reference, workdir: Path, **run_options: Any) -> dict[str, Any]:
    """Simulate ``case``, run the pipeline on it in ``workdir`` and measure its recommendation against ``ref``.

    Returns a JSON-able record (see :func:`run_benchmark`). Exceptions propagate.
    """
    from pex.experiment.split import HOLDOUT

    _spec_path, result, seconds = simulate_and_run(case, workdir, **run_options)

    policy = result.policy()
    truth = policy_truth(policy, ref.sim)
    kind = category(policy.kind, policy.default_arm, policy.exploration, ref.sim.control)
    oracle_gain = float(ref.oracle["gain"])
    if kind == "control":
        share = 0.0  # keeping control gains nothing by decision (its exploration is not a choice)
    elif oracle_gain > 1e-12:
        share = truth["gain"] / oracle_gain
    else:  # nothing to gain within the limits (e.g. a null scenario): a share is undefined
        share = math.nan
    # cross-fitted runs (the default) certify on every unit; a single fit on its held-out share
    crossfit = bool(result.summary.get("crossfit"))
    n_eval = case.size if crossfit else round(case.size * float(run_options.get("holdout", HOLDOUT)))
    ceiling = ref.ceiling(n_eval)["fixed_sequence"] / oracle_gain if oracle_gain > 1e-12 else math.nan
    recommendation = result.summary["recommendation"]
    estimated = next((p.get("guardrails", {}) for p in result.summary["policies"] if p["name"] == policy.name), {})
    return {
        "size": case.size, "scenario": case.scenario, "seed": case.seed, "seconds": seconds, "crossfit": crossfit,
        "policy": policy.name, "kind": policy.kind, "category": kind, "exploration": policy.exploration,
        "verdict": recommendation.get("verdict"),
        "cannot_certify": bool(recommendation.get("cannot_certify", False)),  # absent in older pipelines: False
        "harm": truth["harm"],
        "limit": {g: truth["metrics"][g]["limit"] for g in truth["harm"]},
        "exceeds": bool(truth["exceeds"]),
        "gain": truth["gain"], "oracle_gain": oracle_gain, "gain_share": share, "ceiling_share": ceiling,
        "arm_shares": truth["arm_shares"],
        "estimated_guardrails": estimated,  # the pipeline's own (held-out) view of the same harms, to compare
        "certification": {k: (recommendation.get("certification") or {}).get(k, [])
                          for k in ("order", "certified", "untested", "screened_out")},
        "timings": result.summary.get("timings", {}),
    }


def run_benchmark(cases: Iterable[Case], *, truth_units: int = TRUTH_UNITS, truth_seed: int = TRUTH_SEED,
                  progress: Progress | None = None, stop_on_error: bool = False, **run_options: Any) -> list[dict[str, Any]]:
    """Run every case and return one record per case (the benchmark's core, without printing tables).

    Each scenario's reference draw and oracle are built once and shared by its cases. A case whose
    pipeline fails gives a record with ``error`` (its message) instead of measurements, unless
    ``stop_on_error``: one crash should not cost the rest of an hour-long run.

    Parameters
    ----------
    cases
        From :func:`plan`.
    truth_units, truth_seed
        Size and seed of the fresh draw the truth is measured on.
    progress
        Called with one line per finished case.
    run_options
        Passed to ``pex.run`` (``use_ax=False`` unless given).
    """
    cases = list(cases)
    say = progress or (lambda line: None)
    refs: dict[str, Reference] = {}
    records: list[dict[str, Any]] = []
    for i, case in enumerate(cases, 1):
        if case.scenario not in refs:
            refs[case.scenario] = reference(case.scenario, units=truth_units, seed=truth_seed)
        with tempfile.TemporaryDirectory(prefix="pex-guardrails-") as tmp:
            try:
                record = run_case(case, refs[case.scenario], Path(tmp), **run_options)
            except Exception as exc:  # recorded and reported, not raised: see the docstring
                if stop_on_error:
                    raise
                record = {"size": case.size, "scenario": case.scenario, "seed": case.seed, "error": f"{type(exc).__name__}: {exc}"}
        records.append(record)
        say(f"[{i}/{len(cases)}] {describe(record)}")
    return records


def describe(record: dict[str, Any]) -> str:
    """One line for one experiment."""
    head = f"{record['scenario']} n={record['size']:,} seed={record['seed']}"
    if "error" in record:
        return f"{head}: ERROR {record['error']}"
    harms = ", ".join(f"{g} {h:+.3f} (limit {record['limit'][g]:.2f})" for g, h in record["harm"].items())
    flags = (" EXCEEDS" if record["exceeds"] else "") + (" [cannot certify]" if record["cannot_certify"] else "")
    return (f"{head}: {record['seconds']:.1f}s {record['category']} {record['policy']} -> true harm {harms}, "
            f"gain share {record['gain_share']:.2f}{flags}")


def wilson(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval (95% by default) for a proportion: honest at 0 of n, unlike the normal one."""
    if n == 0:
        return math.nan, math.nan
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def summarize(records: Sequence[dict[str, Any]], by: str) -> list[dict[str, Any]]:
    """One row per value of ``by`` (``size`` or ``scenario``), in order of appearance, plus an ``all`` row."""
    groups: dict[Any, list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault(r[by], []).append(r)
    rows = [_row(key, group) for key, group in groups.items()]
    if len(groups) > 1:
        rows.append(_row("all", list(records)))
    return rows


def _row(key: Any, group: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in group if "error" not in r]
    n = len(ok)
    exceed = sum(r["exceeds"] for r in ok)
    low, high = wilson(exceed, n)
    shares = [r["gain_share"] for r in ok if not math.isnan(r["gain_share"])]
    ceilings = [r["ceiling_share"] for r in ok if not math.isnan(r.get("ceiling_share", math.nan))]
    return {
        "group": key, "experiments": n, "errors": len(group) - n,
        "exceed": exceed, "exceed_share": exceed / n if n else math.nan, "exceed_ci": [low, high],
        "mean_gain_share": float(np.mean(shares)) if shares else math.nan,
        "mean_ceiling": float(np.mean(ceilings)) if ceilings else math.nan,
        "cannot_certify": sum(r["cannot_certify"] for r in ok) / n if n else math.nan,
        **{c: sum(r["category"] == c for r in ok) / n if n else math.nan for c in CATEGORIES},
        "mean_seconds": float(np.mean([r["seconds"] for r in ok])) if ok else math.nan,
    }


def format_table(rows: Sequence[dict[str, Any]], label: str) -> str:
    """The rows of :func:`summarize` as a fixed-width text table."""
    header = (f"{label:<22}{'n':>5}{'err':>5}  {'exceeds max_harm (95% CI)':<28}{'gain/oracle':>12}{'ceiling':>9}{'cannot':>8}"
              f"{'pers':>7}{'arm':>7}{'ctrl':>7}{'sec':>8}")
    lines = [header, "-" * len(header)]
    for r in rows:
        lo, hi = r["exceed_ci"]
        exceed = f"{r['exceed']}/{r['experiments']} {r['exceed_share']:.0%} ({lo:.0%}-{hi:.0%})" if r["experiments"] else "-"
        group = f"{r['group']:,}" if isinstance(r["group"], int) else str(r["group"])
        lines.append(f"{group:<22}{r['experiments']:>5}{r['errors']:>5}  {exceed:<28}{r['mean_gain_share']:>12.2f}{r['mean_ceiling']:>9.2f}"
                     f"{r['cannot_certify']:>8.0%}{r['personalized']:>7.0%}{r['arm']:>7.0%}{r['control']:>7.0%}{r['mean_seconds']:>8.1f}")
    return "\n".join(lines)


def _int_list(text: str) -> list[int]:
    return [int(float(x)) for x in text.split(",") if x.strip()]


def _scenario_list(text: str) -> list[str]:
    names = [x.strip() for x in text.split(",") if x.strip()]
    unknown = [x for x in names if x not in SCENARIOS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown scenario {unknown[0] if unknown else '(none)'}; choose from {', '.join(SCENARIOS)}")
    return names


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=_int_list, default=list(DEFAULT_SIZES), help="units per experiment (comma-separated)")
    ap.add_argument("--per-size", type=int, default=DEFAULT_PER_SIZE, help="experiments per size, spread evenly over the scenarios")
    ap.add_argument("--scenarios", type=_scenario_list, default=list(DEFAULT_SCENARIOS))
    ap.add_argument("--quick", action="store_true", help="3 experiments at 10,000 units (overrides --sizes and --per-size)")
    ap.add_argument("--seed", type=int, default=0, help="first experiment's seed; the others count up from it")
    ap.add_argument("--truth-units", type=int, default=TRUTH_UNITS, help="size of the fresh draw the truth is measured on")
    ap.add_argument("--out", type=Path, default=None, help="write every record and both tables as JSON")
    ap.add_argument("--holdout", type=float, default=None,
                    help="share of units held out for certification, with --no-crossfit (default: the pipeline's own)")
    ap.add_argument("--no-crossfit", action="store_true",
                    help="one fit certified on its held-out share, instead of the default two cross-fitted halves")
    ap.add_argument("--certification", choices=CERTIFICATIONS, default=None,
                    help="the recommendation's multiple-testing procedure (default: the pipeline's own)")
    args = ap.parse_args(argv)
    sizes, per_size = ([10_000], 3) if args.quick else (args.sizes, args.per_size)
    cases = plan(sizes, per_size, args.scenarios, seed=args.seed)
    print(f"{len(cases)} experiments: sizes {', '.join(f'{s:,}' for s in sizes)}, {per_size} per size over "
          f"{', '.join(args.scenarios)}; truth on {args.truth_units:,} fresh units per scenario", file=sys.stderr, flush=True)
    started = time.perf_counter()
    run_options = {k: v for k, v in (("holdout", args.holdout), ("certification", args.certification)) if v is not None}
    if args.no_crossfit:
        run_options["crossfit"] = False
    records = run_benchmark(cases, truth_units=args.truth_units, progress=lambda line: print(line, file=sys.stderr, flush=True),
                            **run_options)
    by_size, by_scenario = summarize(records, "size"), summarize(records, "scenario")
    print(f"\nRecommended policies against the truth ({len(records)} experiments, {time.perf_counter() - started:.0f}s; "
          "exceeds = true harm beyond max_harm on some guardrail; gain/oracle = true primary gain vs all-control as a share "
          "of the best policy within the limits, 0 when keeping control; ceiling = the same share to expect from "
          "certifying the oracle's own policies on as many held-out units, knowing every true effect)\n")
    print(format_table(by_size, "units"))
    print()
    print(format_table(by_scenario, "scenario"))
    if args.out is not None:
        payload = {"sizes": sizes, "per_size": per_size, "scenarios": args.scenarios, "truth_units": args.truth_units,
                   "records": records, "by_size": by_size, "by_scenario": by_scenario}
        args.out.write_text(json.dumps(_plain(payload), indent=2, allow_nan=False) + "\n", encoding="utf-8")
        print(f"\nwrote {args.out}")
    return 0 if not any("error" in r for r in records) else 1


def _plain(value: Any) -> Any:
    """``value`` as strict JSON data: numpy scalars as Python numbers, NaN and infinities as null."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


if __name__ == "__main__":
    sys.exit(main())
