"""The whole offline pipeline in one call (``pex run``, ``pex.run``).

One straight path: ingest -> health and average effects -> for each fold of
the cross-fit (:mod:`pex.services.crossfit`; two halves by default, one
held-out share with ``crossfit=False``): HTE fit, policies (baselines, value
model, distilled trees), offline weight search (:mod:`pex.services.optimize`,
its Pareto candidates become value policies) -> one policy per recipe (routed
over the folds) -> off-policy comparison on the held-out units ->
recommendation (:mod:`pex.evaluation.recommendation`) -> outputs:
``summary.json``, ``policies/*.json`` and ``report.html`` in the output
folder, and the same summary stored in the workspace for ``pex report``.

:func:`run` starts from a spec file (ingesting its data); :func:`run_stored` from a dataset version already in the
workspace (the UI's experiments, uploaded through the browser, have no spec file anyone edits). Both print the
same ``[i/6]`` stage lines through ``say`` and hand structured :class:`pex.services.progress.Progress` events to
``on_progress`` (the background worker's job rows); a callback raising
:class:`pex.services.progress.Cancelled` stops the run with nothing recorded (the run is recorded at its end).

Everything random is seeded from one ``seed``, so a re-run on the same data
gives the same fit, policies and recommendation. The held-out split is not
random: its key is the dataset version's. Every run is recorded with its
settings, and a later run on the same dataset version recommends the first
run's recommendation unless given a reason (:mod:`pex.services.history`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from pex.errors import PexError
from pex.evaluation.recommendation import CERTIFICATION, CERTIFICATIONS, recommend
from pex.experiment.split import HOLDOUT
from pex.files import write_atomic
from pex.policy.base import Policy
from pex.report.summary import RunSummary, build_summary
from pex.services.crossfit import CrossFit, Folds
from pex.services.fitting import fit_and_store
from pex.services.history import bind, check_reason
from pex.services.live_comparison import live_comparison
from pex.services.models import effect_model_by_id
from pex.services.optimize import pareto_policies
from pex.services.policies import BuildOptions, assemble_policies, load_fit, objective_coefficients
from pex.services.progress import OnProgress, event
from pex.store.records import NewRun, RunRecord
from pex.store.workspace import Workspace

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
    accept_srm: str | None = None  # why a failed sample-ratio check cannot bias the comparison; None: a failure blocks certifying
    build: BuildOptions = field(default_factory=BuildOptions)
    # why this run's recommendation should replace the earlier runs' on the same dataset version (pex.services.history);
    # without one, a later run recommends the binding earlier run's recommendation
    reason: str | None = None

    def fold_plan(self) -> Folds:
        """The held-out arcs the run fits on: the two halves of cross-fitting, or one fold holding out ``holdout``."""
        return Folds.kfold(2) if self.crossfit else Folds.holdout(self.holdout)

    def to_dict(self) -> dict:
        """The options as JSON (recorded in summary.json)."""
        return {"learner": self.learner, "seed": self.seed, "folds": self.folds, "holdout": self.holdout, "trials": self.trials,
                "batch": self.batch, "ax_seconds": self.ax_seconds, "dense": self.dense, "candidates": self.candidates,
                "use_ax": self.use_ax, "certification": self.certification, "crossfit": self.crossfit,
                "accept_srm": self.accept_srm, "build": self.build.to_dict(), "reason": self.reason}


class _Stages:
    """``[i/n] what`` progress lines and per-stage wall time."""

    def __init__(self, total: int, say: Say, on_progress: OnProgress | None = None) -> None:
        self.total, self.say, self.i = total, say, 0
        self.on_progress = on_progress
        self.seconds: dict[str, float] = {}
        self._name: str | None = None
        self._t = time.perf_counter()

    def next(self, name: str, message: str) -> None:
        self._close()
        self.i += 1
        self._name = name
        self.say(f"[{self.i}/{self.total}] {message}")
        self.emit(name, message)

    def emit(self, stage: str, message: str, share: float = 0.0) -> None:
        """Hand a structured event to ``on_progress`` (which may raise Cancelled to stop the run)."""
        if self.on_progress is not None:
            self.on_progress(event(stage, message, share))

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
        on_progress: OnProgress | None = None, **overrides: Any) -> RunResult:
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
    say, progress, on_progress
        Callbacks for stage messages, for the fit's progress and for structured progress events.
    """
    from pex.experiment.data import load_dataset
    from pex.experiment.spec import load_spec

    options = _options(options, overrides)
    say = say or (lambda message: None)
    started = time.perf_counter()
    stages = _Stages(6, say, on_progress)
    stages.next("ingest", f"reading and validating {spec_path}")
    spec = load_spec(spec_path)
    dataset = load_dataset(spec)
    with Workspace(home) as ws:
        dv = ws.put_dataset(dataset, source=str(spec.data))
        say(f"      dataset version {dv.version} ({dv.id}, {'new' if dv.created else 'already stored'}): "
            f"{dataset.n_units:,} units")
        out_dir = Path(out) if out is not None else Path(f"pex-run-{spec.name}")
        return _pipeline(ws, dataset, dv, options, out_dir, say, progress, stages, started)


def run_stored(home: str | Path | Workspace | None, experiment: str, version: int | None = None, *,
               options: RunOptions | None = None, out: str | Path | None = None, say: Say | None = None,
               progress: Callable[[int, int, str], None] | None = None, on_progress: OnProgress | None = None,
               **overrides: Any) -> RunResult:
    """Run the whole offline pipeline on a stored dataset version of ``experiment`` (default: its current one).

    The same pipeline as :func:`run` after its ingest, on the dataset and spec as stored: the same seed gives the
    same recommendation as ``pex run`` on the spec that stored them. The summary is stored (``ws.run_summary``, which
    the UI renders the report from); files (``summary.json``, ``report.html``, ``policies/``) are written only when
    ``out`` is given. ``home`` is a workspace folder (None: ``PEX_HOME``) or an open :class:`Workspace`.
    """
    options = _options(options, overrides)
    say = say or (lambda message: None)
    started = time.perf_counter()
    stages = _Stages(6, say, on_progress)
    if isinstance(home, Workspace):
        return _run_stored(home, experiment, version, options, out, say, progress, stages, started)
    with Workspace(home) as ws:
        return _run_stored(ws, experiment, version, options, out, say, progress, stages, started)


def _run_stored(ws: Workspace, experiment: str, version: int | None, options: RunOptions, out: str | Path | None,
                say: Say, progress: Callable[[int, int, str], None] | None, stages: _Stages, started: float) -> RunResult:
    stages.next("ingest", f"reading the stored dataset of {experiment}" + (f", version {version}" if version else ""))
    dataset, dv = ws.load_dataset(experiment, version)
    say(f"      dataset version {dv.version} ({dv.id}, stored): {dataset.n_units:,} units")
    return _pipeline(ws, dataset, dv, options, Path(out) if out is not None else None, say, progress, stages, started)


def _options(options: RunOptions | None, overrides: dict[str, Any]) -> RunOptions:
    """The run's options, checked before any work is done or stored."""
    if options is not None and overrides:
        raise TypeError(f"pass either options or keyword overrides, not both (got {', '.join(overrides)})")
    options = options or RunOptions(**{k: v for k, v in overrides.items() if k != "build"})
    if "build" in overrides:
        options.build = overrides["build"]
    options.build.seed = options.seed
    if options.certification not in CERTIFICATIONS:  # before any work is done or stored
        raise PexError(f"certification {options.certification!r} is not one of {', '.join(CERTIFICATIONS)}",
                       f"{CERTIFICATION} (the default) tests the safest planned candidate with half the error, the rest "
                       "together with the other half")
    if options.accept_srm is not None and not options.accept_srm.strip():
        raise PexError("--accept-srm needs a reason: why the sample-ratio mismatch cannot bias the comparison",
                       'e.g. --accept-srm "bot traffic filtered from the treatment arm only, after assignment"')
    options.reason = check_reason(options.reason)
    return options


def _pipeline(ws: Workspace, dataset: Any, dv: Any, options: RunOptions, out_dir: Path | None, say: Say,
              progress: Callable[[int, int, str], None] | None, stages: _Stages, started: float) -> RunResult:
    """Everything after the ingest: effects, fits, policies, search, recommendation, the recorded run; outputs into
    ``out_dir`` when one is given."""
    from pex.experiment.effects import analyze
    from pex.report.html import render_report

    spec = dataset.spec
    plan = options.fold_plan()
    before = ws.run_history(spec.name, dv.id)
    if before:
        say(f"      run {len(before) + 1} on this dataset version"
            + (f", with the reason: {options.reason}" if options.reason else
               "; without --reason it recommends what the binding earlier run recommended"))

    stages.next("effects", "checking health (sample ratio, balance, missing values) and measuring average effects")
    analysis = analyze(dataset)
    ws.put_analysis(spec.name, dv.id, {**analysis.to_dict(), "dataset_version": dv.to_dict()})

    stages.next("fit", _fit_message(plan, options.learner))
    fits = [fit_and_store(ws, dataset, dv, learner=options.learner, folds=options.folds, seed=options.seed,
                          holdout=share, holdout_offset=offset, progress=_fold_progress(progress, stages, i, len(plan.arcs)))
            for i, (offset, share) in enumerate(plan.arcs)]
    record, fit = fits[0]  # the first fold's fit is the one the summary describes
    crossfit = CrossFit.of([load_fit(ws, spec.name, r.id) for r, _summary in fits])

    stages.next("policies", "building the value-model policy and distilled trees")
    sets = [assemble_policies(c, options.build, say=lambda m, i=i: say(f"      {plan.label(i)}{m}"))
            for i, c in enumerate(crossfit.contexts)]

    stages.next("optimize", "searching the weight trade-offs for Pareto candidates, evaluating every policy off-policy")
    searched = [pareto_policies(c, options, say=lambda m, i=i: say(f"      {plan.label(i)}{m}"))
                for i, c in enumerate(crossfit.contexts)]
    tuning = searched[0][0]
    policies = crossfit.route([[*built.policies, *found] for built, (_t, found) in zip(sets, searched)],
                              unit=spec.unit, experiment=spec.name)
    data = crossfit.evaluation
    coefficients = objective_coefficients(spec, crossfit.building_frame(), options.build.weights, options.build.guardrails)
    say(f"      evaluating {len(policies)} policies on {data.n:,} held-out units"
        f"{' (every unit, cross-fitted)' if plan.crossed else ''} (IPS, SNIPS, DM, DR)")
    rows, screens = crossfit.compare(policies, sets[0], coefficients, spec)
    records = ws.put_policies(spec.name, [(p.to_document(), r) for p, r in zip(policies, rows)], fit_id=record.id)
    policies = [p.replace(version=r.version) for p, r in zip(policies, records)]
    build_report = {"fit": record.id, "options": options.build.to_dict(), "evaluation_rows": data.description,
                    "objective_coefficients": coefficients, "calibration": sets[0].calibration,
                    "distillation": sets[0].distilled.to_dict()}

    stages.next("recommend", "choosing the policy to recommend")
    rec = recommend(policies, rows, data, spec, coefficients, screen={p.name: sc for p, sc in zip(policies, screens)},
                    holdout_share=plan.share, certification=options.certification, srm=analysis.srm.to_dict(),
                    accept_srm=options.accept_srm)
    say(f"      {rec.headline}")

    own = (rec.policy, next(p.version for p in policies if p.name == rec.policy))
    settings = options.to_dict()
    live = live_comparison(ws, spec.name)  # what the experiment's rollouts and online rounds stored: nothing is measured
    made: list[dict] = []

    def finish(earlier: list[RunRecord], run_id: int, _now: object) -> NewRun:
        # under the workspace lock, with the runs recorded before this one on the dataset version
        binding = bind(earlier, run_id=run_id, settings=settings, reason=options.reason, dataset_version=dv.version,
                       own=own, load_summary=ws.run_summary)
        summary = build_summary(spec=spec, dataset=dataset, dataset_id=dv.id, dataset_version=dv.version,
                                analysis=analysis, fit_id=record.id, fit=fit, policies=policies, rows=rows,
                                build_report=build_report, tuning=tuning.to_dict(), recommendation=rec,
                                options=settings, evaluation=data.description, crossfit=crossfit.description(),
                                timings={**stages.done(), "total": round(time.perf_counter() - started, 2)},
                                history=binding.history, carried=binding.carried, live_comparison=live).to_dict()
        policy, version = binding.policy or own
        made.append(summary)
        return NewRun(summary, policy, version, own[0], own[1], binding.bound_to)

    stages.emit("report", "recording the run" + (f" and writing {out_dir}" if out_dir is not None else ""))
    recorded = ws.record_run(spec.name, dv.id, settings, options.reason, finish, fit_id=record.id)
    summary = made[-1]
    say(f"      {summary['history']['text']}")
    carried = None
    if recorded.bound_to is not None:  # the recommended policy is the binding run's stored version, as published
        stored = ws.get_policy(recorded.policy, recorded.policy_version)
        carried = Policy.from_document(stored.document, lambda vm: effect_model_by_id(ws, vm["fit"]))
    if out_dir is not None:
        say(f"writing {out_dir / 'summary.json'}, {out_dir / 'report.html'} and {out_dir / 'policies'}/")
        write_outputs(out_dir, summary, policies, render_report)
    stages.emit("report", f"done: run {recorded.id}", 1.0)
    return RunResult(summary=summary, out=out_dir, run_id=recorded.id, policy_objects={p.name: p for p in policies},
                     details={"analysis": analysis, "fit_id": record.id, "fit": fit, "build_report": build_report, "rows": rows,
                              "tuning": tuning, "evaluation": data, "crossfit": crossfit if plan.crossed else None,
                              "screens": {p.name: sc for p, sc in zip(policies, screens)}},  # what recommend was given
                     unit=spec.unit, recommended=carried)


def _fold_progress(progress: Callable[[int, int, str], None] | None, stages: _Stages, fold: int,
                   folds: int) -> Callable[[int, int, str], None] | None:
    """The fit's model-by-model callback for fold ``fold`` of ``folds``: the caller's, and a structured event that
    moves the fraction through the fit stage."""
    if stages.on_progress is None:
        return progress

    def report(done: int, total: int, message: str) -> None:
        if progress is not None:
            progress(done, total, message)
        stages.emit("fit", message, (fold + done / max(total, 1)) / folds)
    return report


def _fit_message(plan: Folds, learner: str) -> str:
    if plan.crossed:
        return (f"fitting heterogeneous-effect models {len(plan)} times (learner {learner}), each on all units but one "
                f"{plan.part}, for policies certified on every unit (cross-fitting)")
    return f"fitting heterogeneous-effect models (learner {learner}, {plan.share:.0%} of units held out)"


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
    run_id: int | None = None  # the id of the recorded run (``ws.run_summary(run_id)``)
    details: dict = field(default_factory=dict, repr=False)  # the Python objects behind the summary (analysis, tuning, rows)
    unit: str | None = None  # the experiment's unit id column
    # the recommended policy when it is an earlier run's (summary["recommendation"]["from_run"]): that run's stored
    # version, which is not among this run's policy_objects (theirs are this run's versions of the same names)
    recommended: Policy | None = field(default=None, repr=False)

    @property
    def typed(self) -> RunSummary:
        """The summary as the typed model the reports read (:class:`pex.report.summary.RunSummary`)."""
        return RunSummary.load(self.summary)

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
                             "recommended": p["name"] == self.recommended_policy
                                            and p.get("version") == self.recommended_version})
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

    @property
    def recommended_version(self) -> int | None:
        """The stored version of the recommended policy (an earlier run's when the recommendation carried over)."""
        return (self.summary["recommendation"].get("document") or {}).get("version")

    def policy(self, name: str | None = None) -> Policy:
        """A policy of this run by name, or (default) the recommended one: the very version the run recommends, which
        is an earlier run's stored version when the recommendation carried over (``summary["history"]``)."""
        if name is None and self.recommended is not None:
            return self.recommended
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
