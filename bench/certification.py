"""Certification procedures compared on the same fits: which multiple-testing procedure and screen to use?

``bench/guardrails.py`` checks the pipeline's own recommendation against the simulator's truth, refitting
everything per experiment. Here each experiment is fitted once and every *variant* of the recommendation is
replayed on that one fit, so procedures are compared on the same data, policies and held-out estimates (their
differences are the procedures', not the draws'), and a new variant costs seconds rather than hours:

1. For each (size, scenario, seed) simulate an experiment, run the whole pipeline on it once (``pex.run``, in a
   temporary workspace) and keep what :func:`pex.evaluation.recommendation.recommend` is given: the policies,
   their comparison rows, the evaluation data, the spec, the objective's coefficients and the building-units
   screens. Each candidate's TRUTH is measured once, on a fresh draw of 200,000 units of the scenario
   (:func:`pex.experiment.truth.policy_truth`, as in ``bench/guardrails.py``), with the constrained oracle's gain.
   All of it is pickled to ``--cache`` (one file per experiment), so later runs replay new variants without
   refitting (``--no-fit`` replays only what is cached).
2. For each VARIANT (keyword arguments for ``recommend`` over the run's own, :data:`VARIANTS`), replay the
   recommendation and read off, against the truth: whether the recommended policy is truly beyond a guardrail's
   limit, its true primary gain as a share of the constrained oracle's (0 when it keeps control), its category
   (personalized, one arm, control), and whether ANY certified candidate is truly beyond a limit (the family-wise
   error the procedure controls).

It prints one line per experiment and variant to stderr (the certified candidates and their true harms), then one
table over the variants: share of recommendations truly beyond a limit (Wilson 95% interval), share of experiments
with a certified candidate beyond a limit, mean gain share, mean number certified, shares of "cannot certify" and
of personalized / arm / control.

    .venv/bin/python bench/certification.py --sizes 20000 --per-size 8 --scenarios segment_harm,aligned_harm \\
        --cache /work/certcache --out certification.json
    .venv/bin/python bench/certification.py --cache /work/certcache --no-fit --variants gated,step-down

Adding a variant is one entry of :data:`VARIANTS` (or ``--variant NAME='{"certification": "step-down"}'``). A
variant's ``screen`` may be a dict (``{}``: nothing screened out) or the name of a screen in :data:`SCREENS` (a
function of the cached run; :func:`load_crossfit` gives its folds' fits, models and data for a screen computed
anew). ``policy_order`` (the benchmark's own key, not passed on) names an order of :data:`ORDERS` the policies
are handed to recommend in: with no screen that order is the test order.
With ``--recompare`` the comparison rows are recomputed from the cached policies and evaluation data by the
current :func:`pex.evaluation.comparison.compare` (for a changed guardrail bound) before replaying.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import pickle
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: bench.guardrails is imported from this checkout
    sys.path.insert(0, str(ROOT))

from bench.guardrails import (  # noqa: E402
    TRUTH_SEED,
    TRUTH_UNITS,
    Case,
    Reference,
    _plain,
    _scenario_list,
    category,
    plan,
    reference,
    simulate_and_run,
    wilson,
)
from pex.experiment.truth import policy_truth  # noqa: E402

CACHE_FORMAT = 1  # bump when Fitted changes shape: older files are then refitted, not misread
CATEGORIES = ("personalized", "arm", "control")
Progress = Callable[[str], None]

# keyword arguments for recommend() over the run's own (screen, holdout_share); the first is the pipeline's default,
# whose replay must reproduce the run's own recommendation (checked per experiment: ``matches_run``)
VARIANTS: dict[str, dict[str, Any]] = {
    "graphical": {"certification": "graphical"},
    "gated": {"certification": "gated"},
    "step-down": {"certification": "step-down"},
    "fixed-sequence": {"certification": "fixed-sequence"},
    # with a single hold-out (--no-crossfit) the screen and its order matter; cross-fitted, recommend uses neither
    "graphical/no-screen": {"certification": "graphical", "screen": "none"},
    "graphical/recipe-order": {"certification": "graphical", "screen": "none", "policy_order": "recipe"},
}


@dataclass
class Fitted:
    """One experiment's pipeline run, kept for replay: what recommend() is given, and every candidate's truth."""

    case: Case
    policies: list  # pex.policy.base.Policy, in the run's order
    rows: list[dict]  # the run's comparison rows, same order
    data: Any  # pex.evaluation.comparison.EvaluationData: the units certified on
    spec: Any  # pex.experiment.spec.ExperimentSpec
    coefficients: dict[str, float]
    screens: dict[str, dict]  # policy name -> {guardrail: pex.policy.constrained.Screen}, on the building units
    holdout_share: float  # share of the units certified on (1.0 cross-fitted)
    truth: dict[str, dict]  # policy name -> policy_truth on the fresh draw
    oracle_gain: float
    control: str
    run: dict  # the run's own recommendation (summary.json's), options, seconds and the commit it ran on
    format: int = CACHE_FORMAT
    extra: dict = field(default_factory=dict)  # room for later additions without a format change


def _screen_of_run(fitted: Fitted) -> dict[str, dict]:
    return fitted.screens


# named screens a variant can ask for by string; a function of the cached run, so a new screening rule computed from
# the cached policies and data can be added here and compared on the same fits
SCREENS: dict[str, Callable[[Fitted], dict[str, dict]]] = {
    "run": _screen_of_run,  # the building-units screens the pipeline computed (the default)
    "none": lambda fitted: {},  # nothing screened out: every candidate is tested
}


def _recipe_order(fitted: Fitted) -> list[int]:
    """The policies' indices in an order fixed by their recipes, using no unit: the value policy's ladder safest
    first (highest planned power; the value policy itself is planned at the default power), then every searched
    policy in the run's order, then one arm for everyone (a priori the boldest). With no screen, recommend()'s test
    order is this order (its sort is stable and every candidate's room is then the same), so this is how a variant
    tests a pre-specified sequence."""
    from pex.experiment.guardrail import POWER

    def key(i: int) -> tuple[bool, bool, float, int]:
        policy = fitted.policies[i]
        unsearched = bool(policy.lineage.get("unsearched", False))
        power = -float(policy.lineage.get("planned_power", POWER)) if unsearched else 0.0
        return (not unsearched, policy.single_arm is not None, power, i)

    return sorted(range(len(fitted.policies)), key=key)


# named policy orders a variant can ask for (``policy_order``: a key of the benchmark, not passed to recommend)
ORDERS: dict[str, Callable[[Fitted], list[int]]] = {
    "run": lambda fitted: list(range(len(fitted.policies))),  # the run's own order
    "recipe": _recipe_order,
}
BENCH_KEYS = ("policy_order",)  # variant keys the benchmark applies itself


def cache_path(cache: Path, case: Case) -> Path:
    """The pickle of ``case``'s fitted run in ``cache``."""
    return cache / f"{case.scenario}-n{case.size}-s{case.seed}.pkl"


def load_cached(path: Path) -> Fitted | None:
    """The fitted run pickled at ``path``, or None when it is missing or of another cache format."""
    if not path.exists():
        return None
    with path.open("rb") as fh:
        fitted = pickle.load(fh)  # our own cache, written by fit_case (never a download)
    if getattr(fitted, "format", None) != CACHE_FORMAT:
        return None
    fitted.extra["cache_file"] = str(path)  # where it was read from, wherever the cache folder has moved
    return fitted


def _effect_model(state: dict[str, Any]) -> Any:
    from pex.hte.model import EffectModel

    return EffectModel(**state)


class _Pickler(pickle.Pickler):
    """Pickles an effect model without its prediction memo (a cache that can hold the 200,000-unit truth draw's
    effects) and its lock (not picklable); both are rebuilt empty on load."""

    def reducer_override(self, obj: Any) -> Any:
        from pex.hte.model import EffectModel

        if type(obj) is EffectModel:
            return _effect_model, ({f.name: getattr(obj, f.name) for f in fields(obj) if f.init},)
        return NotImplemented


def _save(value: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as fh:
        _Pickler(fh, protocol=pickle.HIGHEST_PROTOCOL).dump(value)
    tmp.replace(path)  # whole or not at all: an interrupted run leaves no half pickle under the real name


def crossfit_path(path: Path) -> Path:
    """Where the run's cross-fit (:class:`pex.services.crossfit.CrossFit`: the folds' fits, models and data) is
    kept beside the fitted run at ``path``: apart, so a later change to its classes cannot make the run unreadable."""
    return path.with_suffix(".crossfit.pkl")


def load_crossfit(fitted: Fitted) -> Any:
    """The cached run's cross-fit, for a screen computed anew from the fits (:data:`SCREENS`); None if not kept."""
    if "cache_file" not in fitted.extra:
        return None
    path = crossfit_path(Path(fitted.extra["cache_file"]))
    if not path.exists():
        return None
    with path.open("rb") as fh:
        return pickle.load(fh)  # our own cache, written by fit_all (never a download)


def _commit() -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip() or None


def fit_case(case: Case, ref: Reference, workdir: Path, **run_options: Any) -> tuple[Fitted, Any]:
    """Simulate ``case``, run the pipeline once in ``workdir`` and measure every policy's truth against ``ref``.

    Returns the fitted run and the run's cross-fit (None with ``crossfit=False``)."""
    from pex.experiment.spec import load_spec

    spec_path, result, seconds = simulate_and_run(case, workdir, **run_options)
    details = result.details
    policies = list(result.policy_objects.values())
    started_truth = time.perf_counter()
    truth = {p.name: policy_truth(p, ref.sim) for p in policies}
    summary = result.summary
    share = 1.0 if summary.get("crossfit") else float(summary["options"]["holdout"])
    fitted = Fitted(case=case, policies=policies, rows=details["rows"], data=details["evaluation"], spec=load_spec(spec_path),
                  coefficients=details["build_report"]["objective_coefficients"], screens=details["screens"],
                  holdout_share=share, truth=truth, oracle_gain=float(ref.oracle["gain"]), control=ref.sim.control,
                  run={"recommendation": summary["recommendation"], "options": summary["options"], "seconds": seconds,
                       "truth_seconds": time.perf_counter() - started_truth, "commit": _commit(),
                       "fitted_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")})
    return fitted, details["crossfit"]


def fit_all(cases: Iterable[Case], cache: Path, *, truth_units: int = TRUTH_UNITS, truth_seed: int = TRUTH_SEED,
            until: dt.datetime | None = None, progress: Progress | None = None, **run_options: Any) -> list[Fitted]:
    """The fitted run of every case: from ``cache`` when there, else fitted now and cached (resumable).

    No new fit is started after ``until`` (UTC); the cases not reached are left out. A case whose pipeline
    fails is reported and left out (one crash should not cost the rest of the run).
    """
    say = progress or (lambda line: None)
    refs: dict[str, Reference] = {}
    out: list[Fitted] = []
    for case in cases:
        path = cache_path(cache, case)
        fitted = load_cached(path)
        if fitted is None:
            if until is not None and dt.datetime.now(dt.UTC) >= until:
                say(f"{_head(case)}: not fitted, past --until {until:%H:%M} UTC")
                continue
            if case.scenario not in refs:
                say(f"reference draw of {truth_units:,} units of {case.scenario} and its constrained oracle")
                refs[case.scenario] = reference(case.scenario, units=truth_units, seed=truth_seed)
            with tempfile.TemporaryDirectory(prefix="pex-certbench-") as tmp:
                try:
                    fitted, crossfit = fit_case(case, refs[case.scenario], Path(tmp), **run_options)
                except Exception as exc:  # reported, not raised: see the docstring
                    say(f"{_head(case)}: ERROR {type(exc).__name__}: {exc}")
                    continue
            if crossfit is not None:
                _save(crossfit, crossfit_path(path))
            _save(fitted, path)
            fitted = load_cached(path)  # as a replay will read it (and without the truth draw's memoized effects)
            if fitted is None:
                raise RuntimeError(f"{path} did not read back")
            say(f"{_head(case)}: fitted in {fitted.run['seconds']:.0f}s, truth of {len(fitted.policies)} policies in "
                f"{fitted.run['truth_seconds']:.0f}s -> {path}")
        out.append(fitted)
    return out


def cached(cache: Path) -> list[Fitted]:
    """Every fitted run in ``cache`` (of the current format), in case order."""
    found = [f for f in (load_cached(p) for p in sorted(cache.glob("*.pkl"))) if f is not None]
    return sorted(found, key=lambda f: (f.case.size, f.case.seed, f.case.scenario))


def recommend_kwargs(fitted: Fitted, variant: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments ``variant`` replays recommend() with: the run's own, overridden by the variant's
    (a string ``screen`` names an entry of :data:`SCREENS`)."""
    kwargs: dict[str, Any] = {"screen": fitted.screens, "holdout_share": fitted.holdout_share,
                              **{k: v for k, v in variant.items() if k not in BENCH_KEYS}}
    if isinstance(kwargs["screen"], str):
        if kwargs["screen"] not in SCREENS:
            raise ValueError(f"unknown screen {kwargs['screen']!r}; choose from {', '.join(SCREENS)}")
        kwargs["screen"] = SCREENS[kwargs["screen"]](fitted)
    return kwargs


def replay(fitted: Fitted, name: str, variant: dict[str, Any], *, recompare: bool = False) -> dict[str, Any]:
    """Replay recommend() with ``variant`` on ``fitted`` and measure the outcome against the truth (a JSON-able record)."""
    from pex.evaluation.comparison import compare
    from pex.evaluation.recommendation import recommend

    rows = compare(fitted.policies, fitted.data, fitted.coefficients, fitted.spec) if recompare else fitted.rows
    order_name = variant.get("policy_order", "run")
    if order_name not in ORDERS:
        raise ValueError(f"unknown policy_order {order_name!r}; choose from {', '.join(ORDERS)}")
    order = ORDERS[order_name](fitted)
    policies, rows = [fitted.policies[i] for i in order], [rows[i] for i in order]
    rec = recommend(policies, rows, fitted.data, fitted.spec, fitted.coefficients, **recommend_kwargs(fitted, variant))
    by_name = {p.name: p for p in fitted.policies}
    chosen = by_name[rec.policy]
    truth = fitted.truth[rec.policy]
    kind = category(chosen.kind, chosen.default_arm, chosen.exploration, fitted.control)
    if kind == "control":
        share = 0.0  # keeping control gains nothing by decision (its exploration is not a choice)
    elif fitted.oracle_gain > 1e-12:
        share = truth["gain"] / fitted.oracle_gain
    else:  # nothing to gain within the limits: a share is undefined
        share = math.nan
    cert = rec.certification
    certified = [n for n in cert.get("certified", [])]

    def truly(n: str) -> dict[str, Any]:
        t = fitted.truth[n]
        return {"harm": t["harm"], "exceeds": bool(t["exceeds"]),
                "gain_share": t["gain"] / fitted.oracle_gain if fitted.oracle_gain > 1e-12 else math.nan}

    return {
        "variant": name, "size": fitted.case.size, "scenario": fitted.case.scenario, "seed": fitted.case.seed,
        "experiment": fitted.spec.name, "policy": rec.policy, "category": kind, "verdict": rec.verdict,
        "cannot_certify": bool(rec.cannot_certify),
        "harm": truth["harm"], "limit": {g: truth["metrics"][g]["limit"] for g in truth["harm"]},
        "exceeds": bool(truth["exceeds"]), "gain": truth["gain"], "oracle_gain": fitted.oracle_gain, "gain_share": share,
        "order": list(cert.get("order", [])), "tested": list(cert.get("tested", [])), "untested": list(cert.get("untested", [])),
        "screened_out": list(cert.get("screened_out", [])), "certified": certified,
        "certified_truth": {n: truly(n) for n in certified},
        "any_certified_exceeds": any(fitted.truth[n]["exceeds"] for n in certified),
        # a replay with the run's own settings must reproduce the run's recommendation (None: other settings)
        "matches_run": rec.policy == fitted.run["recommendation"]["policy"] if _run_settings(fitted, variant) else None,
    }


def _run_settings(fitted: Fitted, variant: dict[str, Any]) -> bool:
    """Whether ``variant`` replays recommend() exactly as the run called it."""
    own = {"certification": fitted.run["options"].get("certification"), "screen": "run", "policy_order": "run"}
    return all(own.get(k, object()) == v for k, v in variant.items())


def evaluate(fitted: Sequence[Fitted], variants: dict[str, dict[str, Any]], *, recompare: bool = False,
             progress: Progress | None = None) -> list[dict[str, Any]]:
    """One record per (experiment, variant) (:func:`replay`); a variant that raises gives a record with ``error``."""
    say = progress or (lambda line: None)
    records = []
    for f in fitted:
        say(f"{_head(f.case)}: {_candidates(f)}")
        for name, variant in variants.items():
            try:
                record = replay(f, name, variant, recompare=recompare)
            except Exception as exc:  # a new variant's bug should not cost the others' results
                record = {"variant": name, "size": f.case.size, "scenario": f.case.scenario, "seed": f.case.seed,
                          "error": f"{type(exc).__name__}: {exc}"}
            records.append(record)
            say("    " + describe(record))
    return records


def _head(case: Case) -> str:
    return f"{case.scenario} n={case.size:,} seed={case.seed}"


def short(name: str, experiment: str) -> str:
    """A policy's name without its experiment's prefix (``segment-harm-tree-d1`` -> ``tree-d1``), for the lines."""
    return name.removeprefix(f"{experiment}-")


def _candidates(f: Fitted) -> str:
    """Every policy's true harm and gain share, so the certified lists below can be read against them."""
    parts = []
    for p in f.policies:
        t = f.truth[p.name]
        harms = ",".join(f"{h:+.3f}" for h in t["harm"].values())
        share = t["gain"] / f.oracle_gain if f.oracle_gain > 1e-12 else math.nan
        parts.append(f"{short(p.name, f.spec.name)} [{harms}{' X' if t['exceeds'] else ''}; {share:.2f}]")
    limits = ",".join(f"{g} {v['limit']:.2f}" for g, v in f.truth[f.policies[0].name]["metrics"].items() if g in
                      f.truth[f.policies[0].name]["harm"])
    return f"truth (harm; gain/oracle; X = beyond the limit; limits {limits}): " + " ".join(parts)


def describe(record: dict[str, Any]) -> str:
    """One line for one (experiment, variant)."""
    if "error" in record:
        return f"{record['variant']}: ERROR {record['error']}"
    def name(n: str) -> str:
        return short(n, record["experiment"])

    certified = ", ".join(f"{name(n)}{' X' if t['exceeds'] else ''}" for n, t in record["certified_truth"].items()) or "none"
    return (f"{record['variant']:<22} {record['category']:<12} {name(record['policy']):<16} gain share {record['gain_share']:.2f}"
            f"{' EXCEEDS' if record['exceeds'] else ''}{' [cannot certify]' if record['cannot_certify'] else ''}"
            f"{' [differs from the run]' if record['matches_run'] is False else ''}; certified: {certified}"
            + (f"; screened out: {', '.join(map(name, record['screened_out']))}" if record["screened_out"] else ""))


def summarize(records: Sequence[dict[str, Any]], by: Sequence[str] = ("variant",)) -> list[dict[str, Any]]:
    """One row per value of the ``by`` fields (in order of appearance)."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault(tuple(r[k] for k in by), []).append(r)
    return [_row(key if len(key) > 1 else key[0], group) for key, group in groups.items()]


def _row(key: Any, group: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in group if "error" not in r]
    n = len(ok)
    exceed = sum(r["exceeds"] for r in ok)
    family = sum(r["any_certified_exceeds"] for r in ok)
    shares = [r["gain_share"] for r in ok if not math.isnan(r["gain_share"])]
    return {
        "group": key, "experiments": n, "errors": len(group) - n,
        "exceed": exceed, "exceed_share": exceed / n if n else math.nan, "exceed_ci": list(wilson(exceed, n)),
        "family_exceed": family, "family_exceed_share": family / n if n else math.nan, "family_exceed_ci": list(wilson(family, n)),
        "mean_gain_share": float(np.mean(shares)) if shares else math.nan,
        "mean_certified": float(np.mean([len(r["certified"]) for r in ok])) if ok else math.nan,
        "cannot_certify": sum(r["cannot_certify"] for r in ok) / n if n else math.nan,
        **{c: sum(r["category"] == c for r in ok) / n if n else math.nan for c in CATEGORIES},
    }


def format_table(rows: Sequence[dict[str, Any]], label: str = "variant") -> str:
    """The rows of :func:`summarize` as a fixed-width text table."""
    header = (f"{label:<44}{'n':>4}  {'rec. beyond limit (95% CI)':<27}{'any certified beyond':<25}{'gain/oracle':>12}"
              f"{'#cert':>7}{'cannot':>8}{'pers':>6}{'arm':>6}{'ctrl':>6}")
    lines = [header, "-" * len(header)]
    for r in rows:
        n = r["experiments"]
        group = " ".join(str(g) for g in r["group"]) if isinstance(r["group"], tuple) else str(r["group"])
        if not n:
            lines.append(f"{group:<44}{0:>4}  (every replay failed: {r['errors']} errors)")
            continue
        lo, hi = r["exceed_ci"]
        flo, fhi = r["family_exceed_ci"]
        exceed = f"{r['exceed']}/{n} {r['exceed_share']:.0%} ({lo:.0%}-{hi:.0%})"
        family = f"{r['family_exceed']}/{n} {r['family_exceed_share']:.0%} ({flo:.0%}-{fhi:.0%})"
        lines.append(f"{group:<44}{n:>4}  {exceed:<27}{family:<25}"
                     f"{r['mean_gain_share']:>12.2f}{r['mean_certified']:>7.1f}{r['cannot_certify']:>8.0%}"
                     f"{r['personalized']:>6.0%}{r['arm']:>6.0%}{r['control']:>6.0%}")
    return "\n".join(lines)


def _int_list(text: str) -> list[int]:
    return [int(float(x)) for x in text.split(",") if x.strip()]


def _variant(text: str) -> tuple[str, dict[str, Any]]:
    name, sep, body = text.partition("=")
    try:
        value = json.loads(body) if sep else None
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"--variant {name}: not JSON ({exc})") from None
    if not name or not isinstance(value, dict):
        raise argparse.ArgumentTypeError('--variant wants NAME=JSON-OBJECT, e.g. fs=\'{"certification": "fixed-sequence"}\'')
    return name, value


def _until(text: str) -> dt.datetime:
    today = dt.datetime.now(dt.UTC)
    try:
        hour, minute = (int(x) for x in text.split(":"))
        return today.replace(hour=hour, minute=minute, second=0, microsecond=0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--until wants HH:MM (UTC), got {text!r}") from None


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=_int_list, default=[20_000], help="units per experiment (comma-separated)")
    ap.add_argument("--per-size", type=int, default=8, help="experiments per size, spread evenly over the scenarios")
    ap.add_argument("--scenarios", type=_scenario_list, default=["segment_harm", "aligned_harm"])
    ap.add_argument("--seed", type=int, default=0, help="first experiment's seed; the others count up from it")
    ap.add_argument("--truth-units", type=int, default=TRUTH_UNITS, help="size of the fresh draw the truth is measured on")
    ap.add_argument("--cache", type=Path, default=Path(".certcache"), help="folder of the fitted runs (one pickle each)")
    ap.add_argument("--no-fit", action="store_true", help="replay every cached run only; fit nothing")
    ap.add_argument("--until", type=_until, default=None, help="start no new fit after HH:MM UTC (cached runs are still replayed)")
    ap.add_argument("--variants", default=None, help=f"comma-separated names from: {', '.join(VARIANTS)} (default: all)")
    ap.add_argument("--variant", type=_variant, action="append", default=[], metavar="NAME=JSON",
                    help="an extra variant: keyword arguments for recommend() as a JSON object (repeatable)")
    ap.add_argument("--recompare", action="store_true", help="recompute the comparison rows with the current compare()")
    ap.add_argument("--out", type=Path, default=None, help="write every record and the table as JSON")
    args = ap.parse_args(argv)

    chosen = list(VARIANTS) if args.variants is None else [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in chosen if v not in VARIANTS]
    if unknown:
        ap.error(f"unknown variant {unknown[0]!r}; choose from {', '.join(VARIANTS)} or add one with --variant")
    variants = {**{v: VARIANTS[v] for v in chosen}, **dict(args.variant)}
    say = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    started = time.perf_counter()
    if args.no_fit:
        fitted = cached(args.cache)
    else:
        cases = plan(args.sizes, args.per_size, args.scenarios, seed=args.seed)
        say(f"{len(cases)} experiments ({', '.join(args.scenarios)} at {', '.join(f'{s:,}' for s in args.sizes)} units); "
            f"cache {args.cache}; truth on {args.truth_units:,} fresh units per scenario")
        fitted = fit_all(cases, args.cache, truth_units=args.truth_units, until=args.until, progress=say)
    if not fitted:
        say(f"no fitted experiment (cache {args.cache})")
        return 1
    records = evaluate(fitted, variants, recompare=args.recompare, progress=say)
    table, by_scenario = summarize(records), summarize(records, ("variant", "scenario"))
    mismatched = [r for r in records if r.get("matches_run") is False]
    print(f"\n{len(fitted)} experiments x {len(variants)} variants ({time.perf_counter() - started:.0f}s). rec. beyond limit = "
          "the recommended policy's true harm is beyond max_harm on some guardrail; any certified beyond = some certified "
          "candidate's is (the family-wise error); gain/oracle = the recommendation's true primary gain as a share of "
          "the constrained oracle's, 0 when keeping control; #cert = candidates certified\n")
    print(format_table(table))
    print()
    print(format_table(by_scenario, "variant, scenario"))
    if mismatched:
        print(f"\nnote: {len(mismatched)} replays with the run's own settings differ from the run's recommendation "
              "(recommend changed since they were fitted?)")
    if args.out is not None:
        payload = {"variants": variants, "experiments": [{"size": f.case.size, "scenario": f.case.scenario, "seed": f.case.seed,
                                                          "oracle_gain": f.oracle_gain, "run": f.run,
                                                          "truth": {n: {"harm": t["harm"], "exceeds": t["exceeds"], "gain": t["gain"]}
                                                                    for n, t in f.truth.items()}} for f in fitted],
                   "records": records, "by_variant": table, "by_variant_scenario": by_scenario}
        args.out.write_text(json.dumps(_plain(payload), indent=2, allow_nan=False) + "\n", encoding="utf-8")
        print(f"\nwrote {args.out}")
    return 0 if not any("error" in r for r in records) else 1


if __name__ == "__main__":
    # run through the importable module, so the cache's pickles name bench.certification.Fitted, not __main__.Fitted,
    # and load from any entry point (a test, a notebook)
    from bench.certification import main as _main

    sys.exit(_main())
