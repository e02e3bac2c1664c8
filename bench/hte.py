"""Benchmark pex's heterogeneous-effect learners against EconML's own classes.

Usage (from the repository root)::

    .venv/bin/python bench/hte.py [--n 50000] [--scale-n 1000000] [--skip-scale] [--skip-econml] [--quick]

What it measures, side by side in one run:

* **PEHE** - root mean squared error of the predicted effect against the true
  effect, per metric, as the RMS over the non-control arms:
  ``sqrt(mean_arms(mean_units((tau_hat - tau)^2)))``. For the ``pex.experiment.simulate``
  scenarios it is computed on a separate, freshly simulated test sample; EconML's
  IHDP surface B has no test set, so there it is in-sample (the training units).
* **fit s** - wall seconds of fitting: ``fit_effects(...)`` for pex (all metrics,
  all four learners, feature encoding included); the sum of ``est.fit(...)`` over
  metrics for EconML (one estimator per metric; feature encoding not included).
* **peak MB** - ``getrusage(RUSAGE_SELF).ru_maxrss`` of a fresh ``spawn``
  subprocess per (dataset, method): imports + reading the data + fitting +
  predicting. **fit +MB** is what fitting alone added on top of the process's
  resident size when the fit started (peak RSS is reset through
  ``/proc/self/clear_refs`` just before the fit and read from ``VmHWM`` after it;
  that reset also clears ``ru_maxrss``, so the peak before it is kept and the
  reported peak is the larger of the two).
* Every number comes from a single run: on a machine shared with other work,
  fit seconds can jump (LightGBM's OpenMP threads suffer most when a core is busy).

The parent process imports only the standard library and never holds data:
a spawned child's ``ru_maxrss`` starts at its parent's resident size (the kernel
carries the pre-exec high-water mark over), so a fat parent would pollute every
child's number. Data are simulated and written by child processes, into a
temporary directory that is removed at the end; nothing is written elsewhere.

Methods
-------
``pex auto``
    ``pex.hte.learners.fit_effects(dataset, learner="auto", folds=2)``: T, X, S and DR
    learners on shared cross-fitted LightGBM outcome models, selection per metric.
``econml T / X / S / DR``
    ``econml.metalearners.TLearner/XLearner/SLearner`` and ``econml.dr.DRLearner``
    with LightGBM base learners (``LGBMRegressor``/``LGBMClassifier``) built from
    pex's ``outcome_params`` / ``effect_params`` (see ``_lgbm``), fed the same
    numeric matrix pex's ``FeatureEncoder`` makes (categorical codes are plain
    numbers to EconML's LightGBM models; pex marks them categorical).
"""

from __future__ import annotations

# Only the standard library at module level: spawned children re-import this module,
# and the parent must stay small (see the module docstring).
import argparse
import math
import multiprocessing as mp
import os
import sys
import tempfile
import time
import traceback
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SCENARIOS = ("notification_cadence", "constant")
ECONML_LEARNERS = {"t": "econml T", "x": "econml X", "s": "econml S", "dr": "econml DR"}
SIM_BASE_FEATURES = 5  # age, tenure_days, country, platform, sessions_pre: simulate()'s features besides x0..x{n_noise-1}
IHDP_NAME = "ihdp_B"
IHDP_METRIC = "y"
SCALE_GOAL_SECONDS = 300.0
SCALE_GOAL_MB = 4096.0


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- memory of the current (child) process ------------------------------------------------------


def _status_mb(key: str) -> float | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


_PEAK_BEFORE_RESET = [0.0]  # resetting VmHWM also resets ru_maxrss, so the earlier peak is kept here


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM, and with it ru_maxrss); False where not supported."""
    _PEAK_BEFORE_RESET[0] = max(_PEAK_BEFORE_RESET[0], _maxrss_mb())
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _maxrss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def _peak_mb() -> float:
    """The process's peak resident size: ru_maxrss, or the peak before a reset if that was higher."""
    return max(_maxrss_mb(), _PEAK_BEFORE_RESET[0])


class _FitMemory:
    """Extra resident memory a block needed: peak during the block minus RSS at its start."""

    def __enter__(self):
        self.start = _status_mb("VmRSS")
        self.ok = _reset_peak() and self.start is not None
        return self

    def __exit__(self, *exc):
        peak = _status_mb("VmHWM") if self.ok else None
        self.extra = None if peak is None else max(0.0, peak - self.start)
        return False


# -- child-process plumbing ---------------------------------------------------------------------


def _child_main(conn, fn_name: str, kwargs: dict) -> None:
    import warnings

    result: dict
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = globals()[fn_name](**kwargs)
        except BaseException as exc:  # report every failure to the parent, never hang it
            result = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
    distinct = {}
    for w in caught:
        text = f"{w.category.__name__}: {str(w.message).splitlines()[0][:120]}"
        distinct[text] = distinct.get(text, 0) + 1
    result["warnings"] = distinct
    result["peak_mb"] = _peak_mb()
    result["vmhwm_mb"] = _status_mb("VmHWM")
    conn.send(result)
    conn.close()


def run_child(fn_name: str, **kwargs) -> dict:
    """Run ``fn_name(**kwargs)`` of this module in a fresh spawned process; return its result dict."""
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child_main, args=(child, fn_name, kwargs))
    started = time.perf_counter()
    proc.start()
    child.close()
    result = None
    while result is None:
        if parent.poll(1.0):
            try:
                result = parent.recv()
            except EOFError:
                break
        elif not proc.is_alive():
            break
    proc.join()
    if result is None:
        result = {"error": f"child process died (exit code {proc.exitcode}; out of memory?)"}
    result["process_seconds"] = time.perf_counter() - started
    return result


# -- data preparation (children) ---------------------------------------------------------------


def _write_test(directory: Path, frame, truth: dict) -> tuple[str, str]:
    import numpy as np

    test_path, truth_path = directory / "test.parquet", directory / "truth.npz"
    frame.to_parquet(test_path, index=False)
    np.savez(truth_path, **truth)
    return str(test_path), str(truth_path)


def prepare_sim(directory: str, scenario: str, n: int, n_test: int, seed: int, n_noise: int, fmt: str) -> dict:
    """Simulate training data (spec + data file) and a fresh test sample with its true effects."""
    from pex.experiment.simulate import simulate

    d = Path(directory)
    train = simulate(n, scenario=scenario, seed=seed, n_noise=n_noise)
    spec_path = train.write(d, name="train", fmt=fmt)
    del train
    test = simulate(n_test, scenario=scenario, seed=seed + 1, n_noise=n_noise)
    truth = {f"{m}|{a}": test.truth.cate(m, a) for m in test.truth.expected for a in test.truth.arms if a != test.truth.control}
    test_path, truth_path = _write_test(d, test.data, truth)
    return {"spec": str(spec_path), "test": test_path, "truth": truth_path,
            "metrics": list(test.truth.expected), "in_sample": False}


def prepare_ihdp(directory: str, seed: int) -> dict:
    """EconML's IHDP response surface B as a pex experiment (spec TOML + CSV); truth = its true effects."""
    import numpy as np
    import pandas as pd
    from econml.data.dgps import _ihdp_sim_data, ihdp_surface_B

    d = Path(directory)
    Y, T, X, true_te = ihdp_surface_B(random_state=seed)
    # dgps' column list (see _process_ihdp_sim_data); X[:, 0] is its intercept column, left out
    names = ["bw", "b.head", "preterm", "birth.o", "nnhealth", "momage", "sex", "twin", "b.marr", "mom.lths",
             "mom.hs", "mom.scoll", "cig", "first", "booze", "drugs", "work.dur", "prenatal",
             "site1", "site2", "site3", "site4", "site5", "site6", "site7"]
    assert X.shape[1] == len(names) + 1 and np.all(X[:, 0] == 1) and all(c in _ihdp_sim_data.columns for c in names)
    features = pd.DataFrame(X[:, 1:], columns=[c.replace(".", "_") for c in names])
    frame = pd.concat([pd.DataFrame({"unit": [f"i{i:04d}" for i in range(len(Y))],
                                     "arm": np.where(T == 1, "treated", "control")}),
                       features, pd.DataFrame({IHDP_METRIC: Y})], axis=1)
    frame.to_csv(d / "train.csv", index=False)
    (d / "train.toml").write_text(
        f'name = "ihdp-b"\ndescription = "EconML IHDP response surface B"\ndata = "train.csv"\n'
        f'unit = "unit"\narm = "arm"\ncontrol = "control"\n\n'
        f'[metrics.{IHDP_METRIC}]\ngoal = "increase"\nrole = "primary"\n', encoding="utf-8")
    test_path, truth_path = _write_test(d, features, {f"{IHDP_METRIC}|treated": np.asarray(true_te, dtype=float)})
    return {"spec": str(d / "train.toml"), "test": test_path, "truth": truth_path,
            "metrics": [IHDP_METRIC], "in_sample": True, "n_units": len(Y), "n_treated": int(T.sum())}


# -- fitting (children) ---------------------------------------------------------------------------


def _load(spec_path: str):
    from pex.experiment.data import load_dataset
    from pex.experiment.spec import load_spec

    started = time.perf_counter()
    ds = load_dataset(load_spec(spec_path))
    return ds, time.perf_counter() - started


def _pehe(predicted: dict, truth_path: str) -> dict:
    """{metric: PEHE}, RMS over arms; ``predicted[(metric, arm)]`` are effects on the test units."""
    import numpy as np

    truth = np.load(truth_path)
    by_metric: dict[str, list[float]] = {}
    for key in truth.files:
        metric, arm = key.split("|")
        by_metric.setdefault(metric, []).append(float(np.mean((predicted[(metric, arm)] - truth[key]) ** 2)))
    return {m: math.sqrt(sum(v) / len(v)) for m, v in by_metric.items()}


def fit_pex(spec_path: str, test_path: str, truth_path: str, seed: int, folds: int) -> dict:
    import pandas as pd

    from pex.hte.learners import fit_effects

    ds, load_s = _load(spec_path)
    with _FitMemory() as mem:
        started = time.perf_counter()
        fit = fit_effects(ds, learner="auto", folds=folds, seed=seed)
        fit_s = time.perf_counter() - started
    test = pd.read_parquet(test_path)
    started = time.perf_counter()
    eff = fit.model.predict_frame(test)
    predict_s = time.perf_counter() - started
    predicted = {(m, a): eff[f"cate__{m}__{a}"].to_numpy() for m in fit.model.metrics for a in fit.model.treated_arms}
    return {"pehe": _pehe(predicted, truth_path), "fit_s": fit_s, "internal_s": fit.seconds["total"],
            "predict_s": predict_s, "load_s": load_s, "fit_extra_mb": mem.extra, "n_units": ds.n_units,
            "n_features": len(ds.features), "arms": list(ds.arms), "metrics": list(ds.spec.metrics),
            "selected": {m: f.selected for m, f in fit.metrics.items()}}


def _sk(params: dict, n_jobs: int) -> dict:
    """pex's native LightGBM params as scikit-learn-API arguments (the estimator class sets the objective)."""
    return {
        "learning_rate": params["learning_rate"], "n_estimators": params["num_boost_round"],
        "num_leaves": params["num_leaves"], "min_child_samples": params["min_data_in_leaf"],
        "colsample_bytree": params["feature_fraction"], "subsample": params["bagging_fraction"],
        "subsample_freq": params["bagging_freq"], "reg_lambda": params["lambda_l2"],
        "random_state": params["seed"], "deterministic": params["deterministic"],
        "n_jobs": n_jobs, "verbose": -1,
    }


def _lgbm(kind: str, n: int, seed: int, n_jobs: int):
    """A LightGBM estimator configured like pex's for a model trained on ``n`` rows.

    ``kind``: "reg" (outcome regressor, outcome_params), "clf" (classifier, outcome_params),
    "effect" (regressor for noisy effect targets, effect_params).
    """
    from lightgbm import LGBMClassifier, LGBMRegressor

    from pex.hte.boosting import effect_params, outcome_params

    if kind == "effect":
        return LGBMRegressor(**_sk(effect_params(n, seed), n_jobs))
    params = _sk(outcome_params(n, kind == "clf", seed), n_jobs)
    return LGBMClassifier(**params) if kind == "clf" else LGBMRegressor(**params)


def _econml_estimator(learner: str, binary: bool, sizes: list[int], seed: int, n_jobs: int):
    """``sizes``: units per arm, control first (arm codes 0..k).

    EconML's T/S/X learners call ``.predict`` on their outcome models, so those are
    regressors even for binary metrics (a classifier's ``predict`` returns labels);
    DRLearner takes a classifier for a binary outcome with ``discrete_outcome=True``
    and then uses ``predict_proba``.
    """
    from econml.dr import DRLearner
    from econml.metalearners import SLearner, TLearner, XLearner

    k, n = len(sizes) - 1, sum(sizes)
    categories = list(range(k + 1))  # control = 0 comes first, so it is the baseline
    if learner == "t":
        return TLearner(models=[_lgbm("reg", s, seed, n_jobs) for s in sizes], categories=categories, allow_missing=True)
    if learner == "s":
        return SLearner(overall_model=_lgbm("reg", n, seed, n_jobs), categories=categories, allow_missing=True)
    if learner == "x":
        return XLearner(models=[_lgbm("reg", s, seed, n_jobs) for s in sizes],
                        cate_models=[_lgbm("effect", s, seed, n_jobs) for s in sizes],
                        propensity_model=_lgbm("clf", sizes[0] + round(sum(sizes[1:]) / k), seed, n_jobs),
                        categories=categories, allow_missing=True)
    if learner == "dr":
        return DRLearner(model_propensity=_lgbm("clf", n // 2, seed, n_jobs),
                         model_regression=_lgbm("clf" if binary else "reg", n // 2, seed, n_jobs),
                         model_final=_lgbm("effect", n, seed, n_jobs), discrete_outcome=binary,
                         categories=categories, cv=2, random_state=seed, allow_missing=True)
    raise ValueError(learner)


def fit_econml(learner: str, spec_path: str, test_path: str, truth_path: str, seed: int, n_jobs: int) -> dict:
    import econml.dr
    import econml.metalearners  # noqa: F401
    import lightgbm  # noqa: F401
    import numpy as np
    import pandas as pd

    import pex.hte  # noqa: F401
    from pex.experiment.features import FeatureEncoder

    ds, load_s = _load(spec_path)
    frame, spec = ds.frame, ds.spec
    encoder = FeatureEncoder.fit(frame, ds.features)
    X = encoder.transform(frame)
    # EconML's metalearners validate T as numeric (string labels fail in check_inputs), so arms become
    # codes 0..k with control = 0 (ds.arms lists control first).
    T = frame[spec.arm].map({a: i for i, a in enumerate(ds.arms)}).to_numpy(dtype=int)
    sizes = np.bincount(T, minlength=len(ds.arms)).tolist()
    estimators, fit_s = {}, {}
    with _FitMemory() as mem:
        for metric in spec.metrics.values():
            y = frame[metric.column].to_numpy(dtype=float)
            est = _econml_estimator(learner, ds.metric_types[metric.name] == "binary", sizes, seed, n_jobs)
            started = time.perf_counter()
            est.fit(y, T, X=X, inference=None)
            fit_s[metric.name] = time.perf_counter() - started
            estimators[metric.name] = est
    X_test = encoder.transform(pd.read_parquet(test_path))
    started = time.perf_counter()
    predicted = {(m, a): np.asarray(est.effect(X_test, T0=0, T1=j)).reshape(-1)
                 for m, est in estimators.items() for j, a in enumerate(ds.arms) if j > 0}
    predict_s = time.perf_counter() - started
    return {"pehe": _pehe(predicted, truth_path), "fit_s": sum(fit_s.values()), "fit_s_by_metric": fit_s,
            "predict_s": predict_s, "load_s": load_s, "fit_extra_mb": mem.extra, "n_units": ds.n_units,
            "n_features": len(ds.features), "arms": list(ds.arms), "metrics": list(spec.metrics)}


# -- orchestration and output (parent: standard library only) -------------------------------------


def _fmt(v, digits: int = 4) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        return f"{v:.{digits}g}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)


def render(headers: list[str], rows: list[list], right: set[int] | None = None) -> tuple[str, str]:
    """(aligned plain text, Markdown) versions of one table."""
    right = set(range(len(headers))) - {0, 1} if right is None else right
    cells = [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]

    def line(values):
        return "  ".join(v.rjust(w) if i in right else v.ljust(w) for i, (v, w) in enumerate(zip(values, widths)))

    text = "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in cells)])
    md = "\n".join(["| " + " | ".join(headers) + " |",
                    "|" + "|".join(("---:" if i in right else ":---") for i in range(len(headers))) + "|",
                    *("| " + " | ".join(r) + " |" for r in cells)])
    return text, md


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "?"


def _short(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def run_method(dataset: str, method: str, data: dict, args) -> dict:
    log(f"{dataset}: {method} ...")
    if method == "pex auto":
        res = run_child("fit_pex", spec_path=data["spec"], test_path=data["test"], truth_path=data["truth"],
                        seed=args.seed, folds=2)
    else:
        learner = next(k for k, v in ECONML_LEARNERS.items() if v == method)
        res = run_child("fit_econml", learner=learner, spec_path=data["spec"], test_path=data["test"],
                        truth_path=data["truth"], seed=args.seed, n_jobs=args.econml_threads)
    res.update(dataset=dataset, method=method)
    if "error" in res:
        log(f"{dataset}: {method} FAILED: {res['error']}")
        if args.verbose and "traceback" in res:
            print(res["traceback"], file=sys.stderr)
    else:
        pehe = ", ".join(f"{m} {_fmt(v)}" for m, v in res["pehe"].items())
        log(f"{dataset}: {method} fit {res['fit_s']:.1f} s, peak {res['peak_mb']:.0f} MB, PEHE {pehe} "
            f"(process {res['process_seconds']:.1f} s)")
    for text, count in res.get("warnings", {}).items():
        log(f"    warning x{count}: {text}")
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=None, help="training units per simulated scenario (default 50,000; 5,000 with --quick)")
    p.add_argument("--n-test", type=int, default=None, help="fresh test units per scenario (default 20,000; 5,000 with --quick)")
    p.add_argument("--scale-n", type=int, default=None, help="units of the pex-only scale run (default 1,000,000; 100,000 with --quick)")
    p.add_argument("--scale-features", type=int, default=20, help="features in the scale run (default 20)")
    p.add_argument("--skip-scale", action="store_true", help="skip the scale run")
    p.add_argument("--skip-econml", action="store_true", help="only pex auto (no EconML learners)")
    p.add_argument("--skip-ihdp", action="store_true", help="skip EconML's IHDP dataset")
    p.add_argument("--quick", action="store_true",
                   help="small sizes (5,000 units, scale run 100,000): about 2 minutes, 1 with --skip-econml")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--econml-threads", type=int, default=_cores(),
                   help=f"n_jobs of EconML's LightGBM models (default: all {_cores()} cores, as pex uses)")
    p.add_argument("--verbose", action="store_true", help="print child tracebacks")
    args = p.parse_args(argv)
    args.n = args.n or (5_000 if args.quick else 50_000)
    args.n_test = args.n_test or (5_000 if args.quick else 20_000)
    args.scale_n = args.scale_n or (100_000 if args.quick else 1_000_000)
    if args.scale_features < SIM_BASE_FEATURES:
        p.error(f"--scale-features must be at least {SIM_BASE_FEATURES}")
    t_start = time.perf_counter()
    methods = ["pex auto"] + ([] if args.skip_econml else list(ECONML_LEARNERS.values()))

    with tempfile.TemporaryDirectory(prefix="pex-bench-") as tmp:
        os.environ["PEX_HOME"] = str(Path(tmp) / "pex-home")  # nothing here uses the store; just in case
        results, datasets = [], {}
        for scenario in SCENARIOS:
            d = Path(tmp) / scenario
            d.mkdir()
            log(f"{scenario}: simulating {args.n:,} training + {args.n_test:,} test units ...")
            datasets[scenario] = run_child("prepare_sim", directory=str(d), scenario=scenario, n=args.n,
                                           n_test=args.n_test, seed=args.seed, n_noise=8, fmt="csv")
        if not args.skip_ihdp:
            d = Path(tmp) / IHDP_NAME
            d.mkdir()
            log(f"{IHDP_NAME}: building the pex spec + CSV from econml.data.dgps.ihdp_surface_B ...")
            datasets[IHDP_NAME] = run_child("prepare_ihdp", directory=str(d), seed=args.seed)
        for name, data in datasets.items():
            if "error" in data:
                log(f"{name}: preparing the data FAILED: {data['error']}")
                print(data.get("traceback", ""), file=sys.stderr)
                continue
            for method in methods:
                results.append(run_method(name, method, data, args))

        scale = None
        if not args.skip_scale:
            d = Path(tmp) / "scale"
            d.mkdir()
            n_noise = args.scale_features - SIM_BASE_FEATURES
            log(f"scale: simulating {args.scale_n:,} units x {args.scale_features} features (n_noise={n_noise}) ...")
            data = run_child("prepare_sim", directory=str(d), scenario="notification_cadence", n=args.scale_n,
                             n_test=args.n_test, seed=args.seed, n_noise=n_noise, fmt="parquet")
            if "error" in data:
                log(f"scale: preparing the data FAILED: {data['error']}")
                scale = data
            else:
                scale = run_method("scale", "pex auto", data, args)

    report(results, datasets, scale, args, time.perf_counter() - t_start)
    return 0


def report(results: list[dict], datasets: dict, scale: dict | None, args, total_s: float) -> None:
    out = []
    say = out.append
    cores = _cores()
    say("pex HTE benchmark: pex auto vs EconML metalearners")
    say(f"python {sys.version.split()[0]}, pex {_version('pex')}, econml {_version('econml')}, "
        f"lightgbm {_version('lightgbm')}, scikit-learn {_version('scikit-learn')}; {cores} cores")
    say(f"simulated scenarios: {args.n:,} training units, {args.n_test:,} fresh test units, "
        f"3 arms (control, daily, weekly), 3 metrics, {SIM_BASE_FEATURES + 8} features; seed {args.seed}")
    if IHDP_NAME in datasets and "error" not in datasets[IHDP_NAME]:
        ih = datasets[IHDP_NAME]
        say(f"{IHDP_NAME}: EconML IHDP response surface B, {ih['n_units']} units ({ih['n_treated']} treated), "
            f"25 covariates, continuous outcome '{IHDP_METRIC}'; no test set, so PEHE is IN-SAMPLE")
    say("")

    metrics: list[str] = []
    for r in results:
        for m in r.get("pehe", {}):
            if m not in metrics:
                metrics.append(m)
    headers = ["dataset", "method", *[f"PEHE {m}" for m in metrics], "fit s", "peak MB", "fit +MB"]
    rows = []
    for r in results:
        if "error" in r:
            rows.append([r["dataset"], r["method"], *(["FAILED"] + ["-"] * (len(metrics) - 1)), "-", "-", "-"])
            continue
        rows.append([r["dataset"], r["method"], *[r["pehe"].get(m) for m in metrics],
                     round(r["fit_s"], 2), round(r["peak_mb"]), None if r["fit_extra_mb"] is None else round(r["fit_extra_mb"])])
    main_text, main_md = render(headers, rows)
    say("Accuracy and cost (PEHE: lower is better; RMS over the non-control arms)")
    say(main_text)
    failed = [r for r in results if "error" in r]
    for r in failed:
        say(f"  FAILED {r['dataset']} / {r['method']}: {_short(r['error'], 200)}")
    selected = [r for r in results if r["method"] == "pex auto" and "selected" in r]
    if selected:
        say("pex auto selected: " + "; ".join(
            f"{r['dataset']}: " + ", ".join(f"{m}={lr}" for m, lr in r["selected"].items()) for r in selected))
    say("")

    cmp_md = None
    if not args.skip_econml:
        by = {(r["dataset"], r["method"]): r for r in results if "error" not in r}
        cmp_rows = []
        for name in datasets:
            pex_r, x_r, dr_r = by.get((name, "pex auto")), by.get((name, "econml X")), by.get((name, "econml DR"))
            if not (pex_r and x_r and dr_r):
                continue
            xdr = x_r["fit_s"] + dr_r["fit_s"]
            cmp_rows.append([name, round(pex_r["fit_s"], 2), round(x_r["fit_s"], 2), round(dr_r["fit_s"], 2),
                             round(xdr, 2), round(pex_r["fit_s"] / xdr, 2), "yes" if pex_r["fit_s"] <= xdr else "NO"])
        if cmp_rows:
            text, cmp_md = render(["dataset", "pex auto s", "econml X s", "econml DR s", "X + DR s",
                                   "pex / (X+DR)", "pex <= X+DR"], cmp_rows, right={1, 2, 3, 4, 5, 6})
            say("Wall time target: pex auto (all four learners + selection) vs raw EconML fitting only X and DR")
            say(text)
            say("")

    scale_md = None
    if scale is not None:
        say("Scale run (pex auto only)")
        if "error" in scale:
            say(f"  FAILED: {_short(scale['error'], 300)}")
        else:
            goal_ok = scale["fit_s"] < SCALE_GOAL_SECONDS and scale["peak_mb"] < SCALE_GOAL_MB
            srows = [[f"{scale['n_units']:,}", scale["n_features"], len(scale["arms"]), len(scale["metrics"]),
                      round(scale["load_s"], 1), round(scale["fit_s"], 1), round(scale["peak_mb"]),
                      None if scale["fit_extra_mb"] is None else round(scale["fit_extra_mb"]),
                      *[scale["pehe"].get(m) for m in scale["metrics"]],
                      "yes" if goal_ok else "NO"]]
            text, scale_md = render(["units", "features", "arms", "metrics", "load s", "fit s", "peak MB", "fit +MB",
                                     *[f"PEHE {m}" for m in scale["metrics"]],
                                     f"< {SCALE_GOAL_SECONDS / 60:.0f} min & < {SCALE_GOAL_MB / 1024:.0f} GB"],
                                    srows, right=set(range(10 + len(scale["metrics"]))))
            say(text)
            say(f"  (load s = reading + validating the Parquet file; whole process incl. imports and predicting "
                f"{scale['process_seconds']:.1f} s; PEHE on {args.n_test:,} fresh test units; "
                f"selected: {', '.join(f'{m}={lr}' for m, lr in scale['selected'].items())})")
        say("")

    say("Notes")
    for note in (
        "fit s: wall seconds. pex auto = one fit_effects(learner='auto', folds=2) call over all metrics: T, X, S "
        f"and DR learners plus selection, single-threaded LightGBM boosters run {cores} at a time. "
        "econml = sum over metrics of est.fit(y, T, X=X, inference=None), one estimator per metric, "
        f"LightGBM n_jobs={args.econml_threads}.",
        "peak MB: ru_maxrss of a fresh spawned process per row (imports, reading the data, fitting, predicting); "
        "fit +MB: peak resident memory during the fit above the resident size when the fit started. "
        "The econml rows' processes also import EconML (about 60 MB more before any fitting).",
        "Single runs, no repetition: fit seconds are sensitive to other load on the machine.",
        "EconML base learners: LGBMRegressor/LGBMClassifier with pex's outcome_params (learning_rate 0.05, "
        "200 trees, num_leaves / min_child_samples scaled by the rows each model trains on, 0.8 row and column "
        "subsampling, L2 1.0); X-learner cate_models and DR model_final use effect_params (100 trees, fewer, "
        "larger leaves).",
        "T/S/X outcome models are regressors for binary metrics too (EconML calls .predict, which on a classifier "
        "returns labels); pex fits binary outcome models with the binary objective. DRLearner uses an "
        "LGBMClassifier for binary outcomes (discrete_outcome=True) and for its propensity model; the X-learner's "
        "propensity_model is an LGBMClassifier. pex uses the known assignment probabilities instead.",
        "Features: the same matrix for all methods (pex's FeatureEncoder); country/platform are integer codes that "
        "EconML's LightGBM models treat as ordinary numbers, while pex declares them categorical. Missing values "
        "stay NaN (EconML with allow_missing=True).",
        "Arms are passed to EconML as codes 0..k with categories=[0..k] (control = 0, the baseline); effects are "
        "est.effect(X, T0=0, T1=j). DRLearner cross-fits its nuisances with cv=2 like pex's 2 folds.",
        f"{IHDP_NAME}: IHDP is observational (treated children of non-white mothers removed), so pex's "
        "propensities (the observed arm shares) do not hold unit by unit; EconML's DR and X fit a propensity model.",
    ):
        say("- " + note)
    say(f"total benchmark time {total_s:.0f} s")
    say("")
    say("Markdown")
    say("")
    say(main_md)
    if cmp_md:
        say("")
        say(cmp_md)
    if scale_md:
        say("")
        say(scale_md)
    print("\n".join(out), flush=True)


if __name__ == "__main__":
    sys.exit(main())
