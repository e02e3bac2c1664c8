"""The whole offline pipeline in one call (``pex run``, ``pex.run``).

ingest -> health and average effects -> HTE fit -> policies (baselines, value
model, distilled trees) -> offline weight search (:mod:`pex.search.tuning`, its
Pareto candidates become value policies) -> off-policy comparison on the
held-out units -> recommendation (:mod:`pex.evaluation.recommendation`) -> outputs:
``summary.json``, ``policies/*.json`` and ``report.html`` in the output
folder, and the same summary stored in the workspace for ``pex report``.

Everything random is seeded from one ``seed``, so a re-run on the same data
gives the same fit, policies and recommendation.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from pex.errors import PexError
from pex.evaluation.comparison import compare
from pex.evaluation.recommendation import CERTIFICATION, CERTIFICATIONS, recommend
from pex.experiment.data import Dataset
from pex.experiment.split import HOLDOUT
from pex.files import write_atomic
from pex.policy.base import Policy
from pex.report.summary import build_summary
from pex.services.crossfit import HALVES, CrossFitted
from pex.services.crossfit import SHARE as CROSSFIT_SHARE
from pex.services.policies import (
    BuildOptions,
    FitContext,
    assemble_policies,
    build_policies,
    load_fit,
    objective_coefficients,
)
from pex.store.workspace import DatasetVersion, FitRecord, Workspace

if TYPE_CHECKING:  # the search (and Ax behind it) is imported only when a search runs
    from pex.search.tuning import TuningResult

Say = Callable[[str], None]


@dataclass
class RunOptions:
    """Knobs of :func:`run`; the defaults are what ``pex run`` uses."""

    learner: str = "auto"
    seed: int = 0
    folds: int = 2
    holdout: float = HOLDOUT
    trials: int = 30  # Ax weight vectors (only with use_ax)
    batch: int = 3  # Ax trials per round (a joint batch of q costs more than q times one)
    ax_seconds: float | None = 20.0  # Ax asks for no new batch after this; None: always all trials
    dense: int = 1024  # Sobol weight vectors, each valued at every treated-share cap
    candidates: int = 2  # Pareto points turned into policies (each one more candidate to certify)
    use_ax: bool = False  # the dense sweep finds the larger front offline (bench/optimize.py); Ax can refine it
    certification: str = CERTIFICATION  # how the held-out test covers every candidate at once (pex.evaluation.recommendation)
    crossfit: bool = True  # two half fits, routing policies certified on every unit (pex.services.crossfit); holdout unused
    build: BuildOptions = field(default_factory=BuildOptions)

    def to_dict(self) -> dict:
        """The options as JSON (recorded in summary.json)."""
        return {"learner": self.learner, "seed": self.seed, "folds": self.folds, "holdout": self.holdout, "trials": self.trials,
                "batch": self.batch, "ax_seconds": self.ax_seconds, "dense": self.dense, "candidates": self.candidates,
                "use_ax": self.use_ax, "certification": self.certification, "crossfit": self.crossfit,
                "build": self.build.to_dict()}


def fit_and_store(ws: Workspace, dataset: Dataset, dv: DatasetVersion, *, learner: str = "auto", folds: int = 2, seed: int = 0,
                  holdout: float = HOLDOUT, holdout_offset: float = 0.0,
                  progress: Callable[[int, int, str], None] | None = None) -> tuple[FitRecord, dict[str, Any]]:
    """Fit effect models on a stored dataset version and store them with their summary."""
    from pex.hte.learners import fit_effects
    from pex.hte.summary import fit_summary

    result = fit_effects(dataset, learner=learner, folds=folds, seed=seed, holdout=holdout, holdout_offset=holdout_offset,
                         progress=progress)
    summary = {**fit_summary(result, seed=seed), "dataset_version": dv.to_dict(), "seed": seed}
    return ws.put_fit(dv.id, learner, result.to_files(), summary), summary


def optimize(ws: Workspace, experiment: str, options: RunOptions, fit_id: str | None = None,
             say: Say | None = None) -> tuple[str, TuningResult, list[dict[str, Any]]]:
    """The weight search on a stored fit (default: the newest), its Pareto candidates stored as evaluated value
    policies (``pex optimize``); returns the fit's id, the search and the candidates' comparison rows."""
    ctx = load_fit(ws, experiment, fit_id)
    result, _policies, rows = optimize_policies(ws, ctx, options, say=say)
    return ctx.record.id, result, rows


def optimize_policies(ws: Workspace, ctx: FitContext, options: RunOptions,
                      say: Say | None = None) -> tuple[TuningResult, list[Policy], list[dict[str, Any]]]:
    """Search value-model weights on ``ctx`` and store the Pareto candidates as evaluated value policies.

    Returns the :class:`pex.search.tuning.TuningResult`, the candidate policies and their comparison rows.
    """
    say = say or (lambda message: None)
    spec = ctx.dataset.spec
    result, policies = pareto_policies(ctx, options, say)
    rows: list[dict] = []
    if policies:
        data = ctx.evaluation()
        say(f"evaluating {len(policies)} Pareto candidates on {data.n:,} held-out units")
        coefficients = objective_coefficients(spec, ctx.training_frame(), options.build.weights, options.build.guardrails)
        rows = compare(policies, data, coefficients, spec)
        for policy, row in zip(policies, rows):
            row["evaluation_rows"] = data.description
            row["tuning"] = policy.lineage["tuning"]
            row["screen"] = ctx.screen(policy)
        records = ws.put_policies(spec.name, [(p.to_document(), r) for p, r in zip(policies, rows)], fit_id=ctx.record.id)
        policies = [policy.replace(version=record.version) for policy, record in zip(policies, records)]
    return result, policies, rows


def pareto_policies(ctx: FitContext, options: RunOptions, say: Say) -> tuple[TuningResult, list[Policy]]:
    """The weight search on ``ctx``'s training units and its Pareto candidates as value policies, with the first
    one's distilled tree (nothing valued or stored)."""
    from pex.policy.value import build_value_policy
    from pex.search.tuning import TuningProblem
    from pex.search.tuning import optimize as search

    spec, model = ctx.dataset.spec, ctx.model
    experiment = spec.name
    problem = TuningProblem.from_fit(ctx, budget=options.build.budget, exploration=options.build.exploration)
    say(f"searching metric weights on {problem.n:,} training units: a dense sweep ({options.dense:,} weight vectors)"
        + (f" refined by Ax ({options.trials} trials, at most {options.ax_seconds:g} s)" if options.use_ax else ""))
    result = search(problem, trials=options.trials, batch=options.batch, dense=options.dense, candidates=options.candidates,
                    seed=options.seed, use_ax=options.use_ax, say=say, ax_seconds=options.ax_seconds)
    train = ctx.training_frame()
    oof, pseudo = ctx.oof_effects(), ctx.pseudo_outcomes()
    policies = []
    for setting in result.candidate_settings():
        if setting["treated_share"] <= 0:  # all-control is already a baseline
            continue
        lineage = {"dataset": ctx.record.dataset_id, "fit_run": ctx.record.id,
                   "objective": {"weights": dict(options.build.weights), "guardrails": options.build.guardrails},
                   "tuning": {"weights": setting["weights"], "budget": setting["budget"], "training_objectives": setting["objectives"],
                              "training_guardrail_harm": setting["guardrail_harm"],
                              "training_guardrail_bound": setting["guardrail_bound"], "in_sample": True}}
        policy, _info = build_value_policy(
            name=f"{experiment}-pareto-{len(policies) + 1}", spec=spec, model=model, frame=train, fit_id=ctx.record.id,
            weights=setting["weights"], guardrails="penalty", budget=setting["budget"], exploration=options.build.exploration,
            lineage=lineage, effects=oof, harm_signal=pseudo, n_eval=ctx.n_eval())
        policies.append(policy)
    if policies:  # the recommended Pareto policy may be a value model: its readable, model-free version competes too
        from pex.services.policies import distill_value_policy

        owner = objective_coefficients(spec, train, options.build.weights, options.build.guardrails)
        first = policies[0]
        distilled = distill_value_policy(ctx, first, owner, options.build, name_prefix=first.name,
                                         lineage={**first.lineage, "distilled_from": first.name})
        tree = distilled.chosen
        policies.append(tree.replace(lineage={**tree.lineage, "candidate": True}))
    return result, policies


class _Stages:
    """``[i/n] what`` progress lines and per-stage wall time."""

    def __init__(self, total: int, say: Say) -> None:
        self.total, self.say, self.i = total, say, 0
        self.seconds: dict[str, float] = {}
        self._name: str | None = None
        self._t = time.perf_counter()

    def next(self, name: str, message: str) -> None:
        self._close()
        self.i += 1
        self._name = name
        self.say(f"[{self.i}/{self.total}] {message}")

    def _close(self) -> None:
        now = time.perf_counter()
        if self._name is not None:
            self.seconds[self._name] = round(now - self._t, 2)
        self._name, self._t = None, now

    def done(self) -> dict[str, float]:
        self._close()
        return self.seconds


def run(spec_path: str | Path, out: str | Path | None = None, *, home: str | Path | None = None,
        options: RunOptions | None = None, say: Say | None = None, progress: Callable[[int, int, str], None] | None = None,
        **overrides: Any) -> RunResult:
    """Run the whole offline pipeline on the experiment described by ``spec_path``.

    Parameters
    ----------
    spec_path
        The experiment spec (TOML); its data file is ingested as a new dataset version if it changed.
    out
        Folder for ``summary.json``, ``report.html`` and ``policies/*.json`` (default: ``pex-run-<name>``).
    home
        Workspace folder (default: ``PEX_HOME`` or ``./.pex``).
    options, overrides
        :class:`RunOptions`, or its fields as keywords (``learner="x"``, ``seed=1``).
    say, progress
        Callbacks for stage messages and for the fit's progress.
    """
    from pex.experiment.data import load_dataset
    from pex.experiment.effects import analyze
    from pex.experiment.spec import load_spec
    from pex.report.html import render_report

    if options is not None and overrides:
        raise TypeError(f"pass either options or keyword overrides, not both (got {', '.join(overrides)})")
    options = options or RunOptions(**{k: v for k, v in overrides.items() if k != "build"})
    if "build" in overrides:
        options.build = overrides["build"]
    options.build.seed = options.seed
    if options.certification not in CERTIFICATIONS:  # before any work is done or stored
        raise PexError(f"certification {options.certification!r} is not one of {', '.join(CERTIFICATIONS)}",
                       "gated (the default) tests the safest candidate alone, then the rest together")
    say = say or (lambda message: None)
    started = time.perf_counter()
    stages = _Stages(6, say)

    stages.next("ingest", f"reading and validating {spec_path}")
    spec = load_spec(spec_path)
    dataset = load_dataset(spec)
    ws = Workspace(home)
    dv = ws.put_dataset(dataset, source=str(spec.data))
    say(f"      dataset version {dv.version} ({dv.id}, {'new' if dv.created else 'already stored'}): {dataset.n_units:,} units")

    stages.next("effects", "checking health (sample ratio, balance, missing values) and measuring average effects")
    analysis = analyze(dataset)
    ws.put_analysis(spec.name, dv.id, {**analysis.to_dict(), "dataset_version": dv.to_dict()})

    if options.crossfit:
        stages.next("fit", f"fitting heterogeneous-effect models twice (learner {options.learner}), each on one half of the "
                           "units, for policies certified on every unit (cross-fitting)")
        halves = [fit_and_store(ws, dataset, dv, learner=options.learner, folds=options.folds, seed=options.seed,
                                holdout=CROSSFIT_SHARE, holdout_offset=offset, progress=progress) for offset in HALVES]
        record, fit = halves[0]
    else:
        stages.next("fit", f"fitting heterogeneous-effect models (learner {options.learner}, {options.holdout:.0%} of units held out)")
        record, fit = fit_and_store(ws, dataset, dv, learner=options.learner, folds=options.folds, seed=options.seed,
                                    holdout=options.holdout, progress=progress)

    stages.next("policies", "building the value-model policy and distilled trees, evaluating them off-policy")
    crossfit: CrossFitted | None = None
    if options.crossfit:
        contexts = [load_fit(ws, spec.name, r.id) for r, _summary in halves]
        for c in contexts:
            c.certify_units = dataset.n_units
        sets = []
        for i, c in enumerate(contexts):
            sets.append(assemble_policies(c, options.build, say=lambda m, i=i: say(f"      half {i + 1}: {m}")))
        crossfit = CrossFitted.of(contexts)
        ctx = contexts[0]
        build_report = {"fit": record.id, "options": options.build.to_dict(), "evaluation_rows": crossfit.evaluation.description,
                        "objective_coefficients": objective_coefficients(spec, dataset.frame, options.build.weights,
                                                                         options.build.guardrails),
                        "calibration": sets[0].calibration, "distillation": sets[0].distilled.to_dict()}
    else:
        ctx = load_fit(ws, spec.name, record.id)
        records, build_report = build_policies(ws, spec.name, options.build, fit_id=record.id, ctx=ctx,
                                               say=lambda m: say(f"      {m}"))

    stages.next("optimize", "searching the weight trade-offs (Ax and a dense sweep) for Pareto candidates")
    coefficients = build_report["objective_coefficients"]
    if crossfit is not None:
        searched = [pareto_policies(c, options, say=lambda m, i=i: say(f"      half {i + 1}: {m}"))
                    for i, c in enumerate(crossfit.contexts)]
        tuning = searched[0][0]
        data = crossfit.evaluation
        policies = crossfit.route([[*built.policies, *found] for built, (_t, found) in zip(sets, searched)],
                                  unit=spec.unit, experiment=spec.name)
        say(f"      evaluating {len(policies)} cross-fitted policies on all {data.n:,} units (IPS, SNIPS, DM, DR)")
        rows, screens = crossfit.compare(policies, sets[0], coefficients, spec)
        records = ws.put_policies(spec.name, [(p.to_document(), r) for p, r in zip(policies, rows)], fit_id=record.id)
        policies = [p.replace(version=r.version) for p, r in zip(policies, records)]
        holdout_share = 1.0
    else:
        tuning, candidates, candidate_rows = optimize_policies(ws, ctx, options, say=lambda m: say(f"      {m}"))
        load = lambda vm: ctx.model  # noqa: E731 - every value policy of this run names this fit
        policies = [Policy.from_document(r.document, load) for r in records] + candidates
        rows = [r.evaluation for r in records] + candidate_rows
        data = ctx.evaluation()
        screens = [r.get("screen") or {} for r in rows]
        holdout_share = options.holdout

    stages.next("recommend", "choosing the policy to recommend")
    rec = recommend(policies, rows, data, spec, coefficients, screen={p.name: sc for p, sc in zip(policies, screens)},
                    holdout_share=holdout_share, certification=options.certification)
    say(f"      {rec.headline}")

    out_dir = Path(out) if out is not None else Path(f"pex-run-{spec.name}")
    summary = build_summary(spec=spec, dataset=dataset, dataset_id=dv.id, dataset_version=dv.version, analysis=analysis,
                            fit_id=record.id, fit=fit, policies=policies, rows=rows, build_report=build_report,
                            tuning=tuning.to_dict(), recommendation=rec, options=options.to_dict(), evaluation=data.description,
                            crossfit=crossfit.description() if crossfit is not None else None,
                            timings={**stages.done(), "total": round(time.perf_counter() - started, 2)}).to_dict()
    say(f"writing {out_dir / 'summary.json'}, {out_dir / 'report.html'} and {out_dir / 'policies'}/")
    write_outputs(out_dir, summary, policies, render_report)
    ws.put_run(spec.name, summary, fit_id=record.id)
    return RunResult(summary=summary, out=out_dir, policy_objects={p.name: p for p in policies},
                     details={"analysis": analysis, "fit_id": record.id, "fit": fit, "build_report": build_report, "rows": rows,
                              "tuning": tuning, "evaluation": data, "crossfit": crossfit}, unit=spec.unit)


def write_outputs(out_dir: Path, summary: dict, policies: list[Policy], render: Callable[[dict], str]) -> None:
    """summary.json, one JSON document per policy, and the HTML report, into ``out_dir``.

    The report is rendered before anything is written, and each file appears whole (written
    beside its final name, then renamed), so a failure never leaves half a file behind.
    Policy files of an earlier run into the same folder that this run did not produce are
    removed, so ``policies/`` always matches ``summary.json``.
    """
    files = {f"policies/{p.name}.json": p.to_json() + "\n" for p in policies}
    files["summary.json"] = json.dumps(summary, indent=2, allow_nan=False) + "\n"
    files["report.html"] = render(summary)
    (out_dir / "policies").mkdir(parents=True, exist_ok=True)
    for rel, text in files.items():
        write_atomic(out_dir / rel, text)
    prefix = f"{summary['experiment']}-"
    for old in (out_dir / "policies").glob(f"{prefix}*.json"):
        if f"policies/{old.name}" not in files:
            old.unlink()


@dataclass
class RunResult:
    """What :func:`run` produced: the summary plus the policies, ready for notebooks."""

    summary: dict
    out: Path | None
    policy_objects: dict[str, Policy]
    details: dict = field(default_factory=dict, repr=False)  # the Python objects behind the summary (analysis, tuning, rows)
    unit: str | None = None  # the experiment's unit id column

    @property
    def recommended_policy(self) -> str:
        """The name of the policy the run recommends."""
        return self.summary["recommended_policy"]

    @property
    def effects(self) -> pd.DataFrame:
        """Average effect per metric and arm (CUPED where a pre-period covariate exists)."""
        return pd.DataFrame(self.summary["effects"])

    @property
    def leaderboard(self) -> pd.DataFrame:
        """Effect learners per metric with their held-out score; ``selected`` marks the one used."""
        return pd.DataFrame(self.summary["hte"]["leaderboard"])

    @property
    def policies(self) -> pd.DataFrame:
        """One row per policy and metric: doubly-robust value and lift over control with 95% CIs."""
        rows = []
        for p in self.summary["policies"]:
            for metric, v in p["value"].items():
                lift = p["lift_vs_control"][metric]
                rows.append({"policy": p["name"], "kind": p["kind"], "metric": metric, "value": v["estimate"],
                             "ci_low": v["ci_low"], "ci_high": v["ci_high"], "lift_vs_control": lift["estimate"],
                             "lift_ci_low": lift["ci_low"], "lift_ci_high": lift["ci_high"], "eligible": p["eligible"],
                             "recommended": p["name"] == self.recommended_policy})
        return pd.DataFrame(rows)

    @property
    def pareto(self) -> pd.DataFrame:
        """The kept Pareto front: weights, treated-share cap, training-unit objectives and guardrail harm."""
        rows = []
        for point in self.summary["pareto"]["fronts"]["kept"]["pareto"]:
            rows.append({**{f"weight_{m}": w for m, w in point["weights"].items()}, "budget": point["budget"],
                         **{f"lift_{m}": v for m, v in point["objectives"].items()},
                         **{f"harm_{m}": v for m, v in point["guardrail_harm"].items()}, "treated_share": point["treated_share"]})
        return pd.DataFrame(rows)

    def policy(self, name: str | None = None) -> Policy:
        """A policy of this run by name (default: the recommended one)."""
        name = name or self.recommended_policy
        if name not in self.policy_objects:
            from pex.errors import NotFoundError

            raise NotFoundError(f"this run has no policy {name!r}", f"policies: {', '.join(self.policy_objects)}")
        return self.policy_objects[name]

    def decide(self, frame: pd.DataFrame, policy: str | None = None, seed: int | None = None) -> pd.DataFrame:
        """Decisions for the rows of ``frame`` (features by name): ``arm`` and its ``propensity``, in row order.

        Reproducible per unit (:meth:`pex.policy.base.Policy.decide`): the units are the experiment's unit column
        when ``frame`` has it, else ``frame``'s index; ``seed`` salts the draws.
        """
        p = self.policy(policy)
        units = frame[self.unit] if self.unit in frame.columns else pd.Series(frame.index, index=frame.index)
        arms, propensity = p.decide(frame, units, salt=seed)
        return pd.DataFrame({"arm": arms, "propensity": propensity}, index=frame.index)
