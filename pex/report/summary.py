"""The run summary: one typed model of what ``pex run`` found, and its published JSON form (``summary.json``).

:func:`build_summary` assembles it from the pipeline's objects; :class:`RunSummary` is what the HTML report,
the terminal text and the web UI read (attributes, not dict keys), and :meth:`RunSummary.to_dict` is the
published form, versioned by :data:`SUMMARY_FORMAT`. A stored summary is read back with
:meth:`RunSummary.load`, which refuses a format it does not know with a clear error instead of rendering
half a report.

Sections that other modules own and describe (the weight search, the effect models' fit, the calibration,
the distillation, the dataset health) are carried as those modules write them; the parts every view
interprets (metrics, policy rows, guardrail verdicts, the recommendation and its certificate) are typed here.

Format history: ``pex.summary/1`` had reasons as plain sentences and guardrail cells with compatibility keys
(``relative_harm``/``absolute_harm``, ``ci_low``/``ci_high``); ``pex.summary/2`` has each reason as
``{code, params, text}`` (:class:`pex.evaluation.recommendation.Reason`), guardrail cells exactly as the
engine's :class:`pex.experiment.guardrail.Harm` serializes itself, and each average-effect guardrail verdict
with its rule's ``limit``; ``pex.summary/3`` adds the certification's first test and levels, its order's basis
and the sample-ratio gate (:class:`Certification`), the explanation codes of issue 23, and the run's ``history`` on
its dataset version (with a carried-over recommendation's ``from_run`` and this run's ``own_recommendation``), and
the optional ``live_comparison`` (:class:`LiveComparison`; no key when nothing live was compared, so summaries
without it stay valid).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from pex.errors import PexError
from pex.evaluation.procedures import CERTIFICATION, certified_text
from pex.experiment.guardrail import FEW_EVENTS, Harm
from pex.report.cells import base_kind

if TYPE_CHECKING:
    from pex.evaluation.recommendation import Recommendation
    from pex.experiment.data import Dataset
    from pex.experiment.effects import Analysis
    from pex.experiment.spec import ExperimentSpec
    from pex.policy.base import Policy

SUMMARY_FORMAT = "pex.summary/3"
FORMATS = (SUMMARY_FORMAT,)


# Where a policy stands in the recommendation: certified; tested but the sequence stopped before it; tested and not
# certified; dropped on the building units before the held-out test; the all-control fallback; not a candidate at all.
Standing = Literal["certified", "not tested", "not certified", "screened out", "fallback", "not a candidate"]


class _Model(BaseModel):
    """Unknown keys are an error: a summary is either this format or refused."""

    model_config = ConfigDict(extra="forbid")


class Interval(_Model):
    """An estimate with its two-sided 95% interval."""

    estimate: float
    ci_low: float
    ci_high: float
    se: float | None = None


class Bounds(_Model):
    """An estimate with bounds each one-sided at the certification's level."""

    estimate: float
    se: float | None = None
    low: float
    high: float


class HarmCell(_Model):
    """One guardrail's verdict for one policy: :class:`pex.experiment.guardrail.Harm` as it serializes itself."""

    metric: str
    estimate: float
    se: float
    lower: float
    upper: float
    limit: float
    max_harm: float | None
    basis: Literal["relative", "absolute"]
    level: float
    verdict: Literal["pass", "fail", "inconclusive"]
    n: int
    units_to_certify: int | None = None
    power: float | None = None  # the pass probability units_to_certify is planned for
    max_harm_abs: float | None = None
    control_events: float | None = None  # events of a count or binary guardrail in control (None: other metrics)

    @property
    def relative(self) -> bool:
        """Whether the harm is relative to the control mean (else absolute: max_harm_abs, or a control mean of 0)."""
        return self.basis == "relative"


class ArmGuardrail(_Model):
    """An arm's average-effect guardrail verdict (:class:`pex.experiment.effects.GuardrailVerdict`)."""

    metric: str
    arm: str
    max_harm: float | None
    limit: float
    harm: float
    harm_upper: float
    harm_lower: float
    p_value: float
    verdict: Literal["pass", "fail", "inconclusive"]
    basis: str
    se: float
    level: float
    units_to_certify: int | None = None
    max_harm_abs: float | None = None

    @property
    def relative(self) -> bool:
        """Whether the harm is relative to the control mean."""
        return self.basis == "relative"


class Srm(_Model):
    """The sample-ratio check (:class:`pex.experiment.effects.SRMResult`)."""

    counts: dict[str, int]
    expected_shares: dict[str, float]
    chi2: float
    p_value: float
    ok: bool
    basis: str
    threshold: float


class Imbalance(_Model):
    """The largest standardized difference of one column between an arm and control."""

    column: str
    arm: str
    smd: float
    detail: str


class Balance(_Model):
    """Covariate balance across arms (:class:`pex.experiment.balance.BalanceResult`)."""

    ok: bool
    threshold: float
    worst: list[Imbalance]


class ArmEffect(_Model):
    """The average effect of one arm against control on one metric (:class:`pex.experiment.effects.ArmEffect`)."""

    metric: str
    arm: str
    n_control: int
    n_arm: int
    control_mean: float
    arm_mean: float
    estimate: float
    se: float
    ci_low: float
    ci_high: float
    p_value: float
    p_holm: float
    relative: float | None
    relative_se: float | None
    relative_ci_low: float | None
    relative_ci_high: float | None
    cuped: bool
    variance_reduction: float | None
    method: str
    baseline: float | None = None
    baseline_se: float | None = None
    baseline_cov: float | None = None


class LearnerScore(_Model):
    """One learner of one metric on the effect models' leaderboard (held-out score, difference to the selected one)."""

    metric: str
    learner: str
    score: float
    score_ci_low: float
    score_ci_high: float
    vs_selected: float
    vs_selected_ci_low: float
    vs_selected_ci_high: float
    fit_seconds: float
    selected: bool


class HeterogeneityTest(_Model):
    """Do effects differ across units? (:class:`pex.hte.heterogeneity.HeterogeneityTest`)."""

    metric: str
    arm: str
    ate: float
    slope: float
    slope_ci_low: float
    slope_ci_high: float
    p_value: float
    p_holm: float
    verdict: Literal["effects differ across units", "no evidence that effects differ"]  # pex.hte.heterogeneity
    qini_area: float
    qini_area_se: float
    qini_curve: list[list[float]]


class SegmentEffect(_Model):
    """A segment's effect of one arm on one metric: honest estimate with its 95% interval, and the models' prediction."""

    metric: str
    arm: str
    predicted: float | None = None
    estimate: float
    ci_low: float
    ci_high: float


class Segment(_Model):
    """A group of units whose effect differs from the average (:class:`pex.hte.segments.Segment`)."""

    rule: str
    share: float
    n_estimation: int
    effects: list[SegmentEffect]


class Importance(_Model):
    """A feature's share in what drives the predicted effects of one metric."""

    metric: str
    feature: str
    importance: float


class Hte(_Model):
    """The effect models of the run: the learner chosen per metric, the leaderboard, heterogeneity, segments, drivers."""

    fit: str
    requested: str
    selected: dict[str, str]
    score: str
    leaderboard: list[LearnerScore]
    heterogeneity: list[HeterogeneityTest]
    segments: list[Segment]
    importance: list[Importance]
    holdout: dict[str, Any]
    seconds: dict[str, float]


class Metric(_Model):
    """A metric of the spec as the summary states it."""

    name: str
    role: Literal["primary", "secondary", "guardrail"]
    goal: Literal["increase", "decrease"]
    max_harm: float | None = None
    type: str | None = None
    description: str | None = None


class ScreenCell(_Model):
    """The building-units check of one guardrail (:meth:`pex.services.policies.FitContext.screen`)."""

    model_config = ConfigDict(extra="allow")

    passed: bool
    harm: float | None = None
    se: float | None = None
    bound: float | None = None
    limit: float | None = None


class PolicyRow(_Model):
    """One policy, valued off-policy on the units its models never saw, and where it stood in the recommendation."""

    name: str
    kind: Literal["constant", "tree", "value", "routing"]
    version: int | None = None
    complexity: int
    exploration: float
    file: str
    value: dict[str, Interval]
    lift_vs_control: dict[str, Interval]
    lift_vs_best_arm: dict[str, Interval]
    best_arm: str | None = None
    objective: Interval
    guardrails: dict[str, HarmCell]
    arm_shares: dict[str, float]
    disagreement: dict[str, bool]
    diagnostics: dict[str, Any]
    eligible: bool
    certification: Literal["certified", "not certified", "screened out", "not a candidate"]
    screen: dict[str, ScreenCell] | None = None
    planned_power: float | None = None
    fidelity: dict[str, Any] | None = None
    tuning: dict[str, Any] | None = None
    # the kind's own fields (pex.policy.base.Policy.summary_fields): a constant's arm, a tree's tree, a routing's routes
    arm: str | None = None
    tree: dict[str, Any] | None = None
    routes: list[dict[str, Any]] | None = None

    @property
    def base_kind(self) -> str:
        """The kind, looking through a routing policy whose routes all share one kind."""
        return base_kind({"kind": self.kind, "routes": self.routes})


class Reason(_Model):
    """One reason behind the recommendation: a code, its parameters, and the sentence rendered from them
    (:func:`pex.evaluation.recommendation.reason_text`, the one place the sentence is written)."""

    code: str
    params: dict[str, Any]
    text: str


class Certification(_Model):
    """How the held-out test covered the candidates (:func:`pex.evaluation.recommendation.recommend`)."""

    method: str
    level: float
    family: list[str]
    k: int
    order: list[str]
    tested: list[str]
    untested: list[str]
    lift_level: float
    lift_method: str
    screened_out: list[str]
    certified: list[str]
    first: str | None  # the candidate tested first on its own (None under step-down)
    first_level: float | None  # the level the first test was made at
    rest_level: float | None  # the level the others were first tested at
    order_basis: str  # what the test order was fixed on, before the test
    srm_blocked: bool  # a failed sample-ratio check kept every candidate from being tested
    accept_srm: str | None  # the owner's recorded reason to certify despite a failed sample-ratio check
    rows: str
    text: str
    procedure: str
    harms: dict[str, dict[str, HarmCell]]
    value: Bounds
    lift_vs_control: Bounds
    lift_vs_control_note: str


class FromRun(_Model):
    """Where a recommendation carried over from an earlier run on the same dataset version comes from, and why
    (:mod:`pex.services.history`)."""

    run: int  # its number on the dataset version (1: the first run)
    id: int  # its id in the workspace
    version: int | None = None  # the stored version of the recommended policy, which publishing serves
    text: str


class RecommendationView(_Model):
    """The recommendation: the policy, the verdict as a code, its sentence, the reasons and the certificate."""

    policy: str
    kind: str
    verdict: Literal["personalize", "ship_arm", "keep_control"]
    headline: str
    reasons: list[Reason]
    primary: str
    eligible: list[str]
    cannot_certify: bool
    certification: Certification
    document: dict[str, Any]
    from_run: FromRun | None = None  # set when the recommendation is an earlier run's on the same dataset version

    def alert_and_reasons(self) -> tuple[str, list[str]]:
        """What every view shows: when nothing could be certified, the reason that says so (the engine's first
        ``cannot_certify`` reason) as an alert to show first and plainly, else ""; the other reasons' sentences."""
        from pex.evaluation.recommendation import CANNOT_CERTIFY, SRM_FAILED

        if self.certification.srm_blocked:
            first = next((r for r in self.reasons if r.code == SRM_FAILED), None)
        else:
            first = next((r for r in self.reasons if r.code == CANNOT_CERTIFY), None) if self.cannot_certify else None
        alert = first.text if first is not None else "Nothing could be certified." if self.cannot_certify else ""
        return alert, [r.text for r in self.reasons if r is not first]

    def reason(self, code: str, **params: Any) -> Reason | None:
        """The first reason with ``code`` whose parameters include ``params``."""
        return next((r for r in self.reasons if r.code == code and all(r.params.get(k) == v for k, v in params.items())), None)


class DatasetInfo(_Model):
    """The stored dataset version the run used and its health at ingestion."""

    id: str
    version: int
    source: str
    n_rows_read: int | None = None
    n_dropped: int | None = None
    dropped: dict[str, int] | None = None
    arm_counts: dict[str, int] | None = None
    missing: dict[str, int] = {}
    features: dict[str, str] = {}
    warnings: list[str] = []


class SettingChange(_Model):
    """A result-affecting setting (:func:`pex.services.history.result_settings`) that differs between two runs."""

    setting: str
    then: Any  # the earlier run's value (None: not set)
    now: Any  # this run's


class EarlierRun(_Model):
    """A run recorded before this one on the same dataset version."""

    run: int  # its number on the dataset version
    id: int
    at: str  # when it was recorded (ISO 8601, UTC)
    differs: list[SettingChange]  # its result-affecting settings that differ from this run's
    recommended: str  # the policy it recommends (an earlier run's, when it did not bind)
    version: int | None = None
    own: str  # what it would have recommended alone
    binds: bool  # whether its own recommendation was the one it recommends
    reason: str | None = None


class History(_Model):
    """This run among the runs on its dataset version, and which recommendation binds (:mod:`pex.services.history`).

    ``binding`` is the code of the rule that applied: ``first`` (no run before on this dataset version), ``reason``
    (a later run whose owner recorded why it replaces the recommendation), ``earlier_run`` (a later run without a
    reason: the recommendation of run ``binding_run`` stands, this run's own choice is shown beside it) or
    ``earlier_unreadable`` (the binding run's summary is of a format this pex cannot read, so this run binds).
    """

    run: int  # this run's number on the dataset version (1: the first run)
    id: int  # this run's id in the workspace
    dataset_version: int
    earlier: list[EarlierRun]
    binding: Literal["first", "reason", "earlier_run", "earlier_unreadable"]
    binding_run: int  # the number of the run whose recommendation binds (this run's own number when it binds)
    reason: str | None = None  # this run's recorded reason (--reason)
    same_settings_as: int | None = None  # the number of the binding run when its result-affecting settings equal this run's
    text: str  # e.g. "Run 2 on dataset version 1; run 1 used seed 0 (this run: 1). ..."


class LiveRow(_Model):
    """One live measurement against the offline estimate that justified it (:func:`pex.monitor.agreement.agreement`),
    as a staged rollout's newest check or an online round's completion stored it."""

    source: Literal["rollout", "online"]
    policy: str  # the rolled-out policy; the online arm's own policy (its route)
    version: int | None = None  # the rolled-out version; the online arm's stored version
    status: str  # the rollout's (running, complete, rolled_back, stopped); "complete" for an online round
    step: int | None = None  # the rollout step of the check (0: the canary)
    share: float | None = None  # the canary's share of units at that step
    round: int | None = None  # the online round
    route: str | None = None  # the online arm's route in its round
    metric: str
    kind: Literal["lift", "harm"]  # a lift over the holdout; an online arm's guardrail harm
    online_estimate: float
    online_se: float
    offline_estimate: float
    offline_se: float
    z: float | None  # None when neither side has a spread
    band: float  # the two-sided band the flag is raised beyond (0.99)
    flag: bool
    measured_at: str  # when the check or the round's completion stored it (ISO 8601, UTC)


class LiveComparison(_Model):
    """Live vs offline (issue 26): the stored comparisons of the experiment's staged rollouts (their newest check)
    and its online loop's completed rounds when the run was made; absent when there was nothing live to compare."""

    rows: list[LiveRow]
    notes: dict[str, str]  # per source, what the live and offline estimates are

    @property
    def flagged(self) -> list[LiveRow]:
        """The rows whose live and offline estimates disagree beyond their band."""
        return [r for r in self.rows if r.flag]


class RunSummary(_Model):
    """Everything ``pex run`` found, typed; :meth:`to_dict` is ``summary.json``."""

    format: Literal["pex.summary/3"] = SUMMARY_FORMAT
    experiment: str
    description: str = ""
    owner: str = ""
    generated_at: str
    pex_version: str
    options: dict[str, Any]
    n_units: int
    arms: list[str]
    control: str
    metrics: list[Metric]
    dataset: DatasetInfo
    srm: Srm
    balance: Balance
    effects: list[ArmEffect]
    guardrails: list[ArmGuardrail]
    hte: Hte
    evaluation_rows: dict[str, Any]
    objective_coefficients: dict[str, float]
    calibration: dict[str, Any] | None = None
    distillation: dict[str, Any] | None = None
    policies: list[PolicyRow]
    pareto: dict[str, Any] | None = None
    recommended_policy: str
    recommendation: RecommendationView
    # this run's own recommendation, when ``recommendation`` is an earlier run's on the same dataset version (its
    # ``from_run``); shown for information, and what this run's policy rows were judged by
    own_recommendation: RecommendationView | None = None
    history: History | None = None
    crossfit: dict[str, Any] | None = None
    caveats: list[str]
    live_comparison: LiveComparison | None = None  # set only when something live was compared (no key otherwise)
    timings: dict[str, float] = {}

    def to_dict(self) -> dict[str, Any]:
        """The published form (``summary.json``): the keys the run set, as JSON values."""
        return self.model_dump(mode="json", exclude_unset=True)

    @classmethod
    def load(cls, data: dict[str, Any]) -> RunSummary:
        """A stored or published summary as the typed model; an unknown format or shape is a :class:`PexError`."""
        if not isinstance(data, dict):
            raise PexError("a run summary must be a JSON object", "read summary.json as written by `pex run`")
        fmt = data.get("format")
        if fmt not in FORMATS:
            raise PexError(f"run summary of format {fmt!r} is not one this pex reads ({', '.join(FORMATS)})",
                           "run the pipeline again with this pex (`pex run SPEC`) to write a summary it can report")
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise PexError(f"run summary does not match {fmt}: {where}: {first['msg']} ({e.error_count()} problem(s))",
                           "the summary was changed or written by another pex; run `pex run SPEC` again") from None

    @property
    def by_name(self) -> dict[str, PolicyRow]:
        """The policy rows by name."""
        return {p.name: p for p in self.policies}

    @property
    def judged(self) -> RecommendationView:
        """The recommendation this run's policy rows were judged by: its own (``own_recommendation``) when the
        recommendation carried over from an earlier run, else the recommendation."""
        return self.own_recommendation or self.recommendation

    @property
    def carried_over(self) -> bool:
        """Whether the recommendation is an earlier run's on the same dataset version (not this run's own)."""
        return self.recommendation.from_run is not None

    def standing(self, policy: PolicyRow) -> Standing:
        """Where a policy stands in this run's certification (what every view labels it with)."""
        cert = self.judged.certification
        if policy.name in cert.certified:
            return "certified"
        if policy.name in cert.untested:  # after a failed test the sequence stops: the rest of the family is not tested
            return "not tested"
        if policy.name in cert.family:
            return "not certified"
        if policy.name in cert.screened_out:
            return "screened out"
        if policy.kind == "constant" and policy.arm is not None and policy.arm == self.control:
            return "fallback"  # everyone keeps control: it harms nothing, so it needs no certificate
        return "not a candidate"


def as_summary(summary: RunSummary | dict[str, Any]) -> RunSummary:
    """``summary`` as the typed model (a dict is loaded and checked by :meth:`RunSummary.load`)."""
    return summary if isinstance(summary, RunSummary) else RunSummary.load(summary)


def _status(name: str, cert: dict) -> str:
    """Where a policy stood in the recommendation: certified, tested but not certified, screened out, or not a candidate."""
    for status, key in (("certified", "certified"), ("not certified", "family"), ("screened out", "screened_out")):
        if name in cert.get(key, []):
            return status
    return "not a candidate"


def _ci(est: dict) -> dict:
    return {"estimate": est["value"], "ci_low": est["ci_low"], "ci_high": est["ci_high"], "se": est["se"]}


def _cell(cell: dict) -> dict:
    """A comparison row's guardrail cell as the engine's :class:`Harm` serializes itself (no compatibility keys)."""
    return Harm.from_dict(cell).to_dict()


def build_summary(*, spec: ExperimentSpec, dataset: Dataset, dataset_id: str, dataset_version: int, analysis: Analysis,
                  fit_id: str, fit: dict, policies: list[Policy], rows: list[dict], build_report: dict, tuning: dict,
                  recommendation: Recommendation, options: dict, evaluation: dict, crossfit: dict | None = None,
                  timings: dict[str, float] | None = None, history: dict | None = None,
                  carried: dict | None = None, live_comparison: dict | None = None) -> RunSummary:
    """The run's results as the typed summary (the keys docs/architecture.md lists under "Outputs", plus what the report
    shows); ``options`` is the run's options as JSON, ``timings`` the stages' wall time when known.

    ``history`` is the run among the runs on its dataset version (:class:`History`); ``carried`` the recommendation
    of an earlier run that binds instead of this run's own (its published form, with ``from_run`` set): it becomes
    ``recommendation`` and ``recommended_policy``, and this run's own goes to ``own_recommendation``;
    ``live_comparison`` the stored live vs offline comparisons (:class:`LiveComparison`), None when there are none."""
    from pex.version import __version__

    chosen = next(p for p in policies if p.name == recommendation.policy)
    cert = recommendation.certification
    policy_rows = []
    for policy, row in zip(policies, rows):
        entry = {
            "name": policy.name, "kind": policy.kind, "version": policy.version, "complexity": policy.complexity,
            "exploration": policy.exploration, "file": f"policies/{policy.name}.json",
            "value": {m: _ci(v) for m, v in row["value"].items()},
            "lift_vs_control": {m: _ci(v) for m, v in row["lift_vs_control"].items()},
            "lift_vs_best_arm": {m: _ci(v) for m, v in row["lift_vs_best_arm"].items()},
            "best_arm": row["best_arm"],
            "objective": _ci(row["objective"]),
            "guardrails": {m: _cell(g) for m, g in row["guardrails"].items()},
            "arm_shares": row["arm_shares"],
            "disagreement": row["disagreement"],
            "diagnostics": row["diagnostics"],
            "eligible": policy.name in recommendation.eligible,
            "certification": _status(policy.name, cert),
        }
        if row.get("screen"):
            entry["screen"] = row["screen"]
        if "planned_power" in policy.lineage:  # a step of the value policy's ladder
            entry["planned_power"] = policy.lineage["planned_power"]
        if "fidelity" in row:
            entry["fidelity"] = row["fidelity"]
        entry.update(policy.summary_fields())  # a constant's arm, a tree's tree
        if "tuning" in row:
            entry["tuning"] = row["tuning"]
        policy_rows.append(entry)
    data_summary = analysis.dataset
    summary = {
        "format": SUMMARY_FORMAT,
        "experiment": spec.name,
        "description": spec.description,
        "owner": spec.owner,
        "generated_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "pex_version": __version__,
        "options": options,
        "n_units": int(dataset.n_units),
        "arms": list(dataset.arms),
        "control": spec.control,
        "metrics": [{"name": m, "role": meta.role, "goal": meta.goal, "max_harm": meta.max_harm,
                     "type": dataset.metric_types[m], "description": meta.description} for m, meta in spec.metrics.items()],
        "dataset": {"id": dataset_id, "version": dataset_version, "source": str(spec.data),
                    "n_rows_read": data_summary.get("n_rows_read"), "n_dropped": data_summary.get("n_dropped"),
                    "dropped": data_summary.get("dropped"), "arm_counts": data_summary.get("arm_counts"),
                    "missing": data_summary.get("missing", {}), "features": data_summary.get("features", {}),
                    "warnings": data_summary.get("warnings", [])},
        "srm": analysis.srm.to_dict(),
        "balance": analysis.balance.to_dict(),
        "effects": [e.to_dict() for e in analysis.effects],
        "guardrails": [g.to_dict() for g in analysis.guardrails],
        "hte": {"fit": fit_id, "requested": fit["requested"], "selected": fit["selected"], "score": fit["score"],
                "leaderboard": fit["leaderboard"], "heterogeneity": fit["heterogeneity"], "segments": fit["segments"],
                "importance": fit["importance"], "holdout": fit["holdout"], "seconds": fit["seconds"]},
        "evaluation_rows": evaluation,
        "objective_coefficients": build_report["objective_coefficients"],
        "calibration": build_report["calibration"],
        "distillation": build_report["distillation"],
        "policies": policy_rows,
        "pareto": tuning,
        "recommended_policy": recommendation.policy,
        "recommendation": {**recommendation.to_dict(), "document": chosen.to_document()},
        "crossfit": crossfit,
        "caveats": caveats(evaluation, fit, crossfit, cert.get("text"),
                           guardrails=[Harm.from_dict(g) for row in rows for g in row["guardrails"].values()]),
    }
    if timings is not None:
        summary["timings"] = timings
    if carried is not None:
        summary["own_recommendation"] = summary["recommendation"]
        summary["recommendation"] = carried
        summary["recommended_policy"] = carried["policy"]
    if history is not None:
        summary["history"] = history
    if live_comparison is not None:
        summary["live_comparison"] = live_comparison
    return RunSummary.model_validate(summary)


def caveats(evaluation: dict, fit: dict, crossfit: dict | None = None, certified: str | None = None,
            guardrails: list[Harm] | None = None) -> list[str]:
    """What the estimates assume and which rows they rest on, in plain words (``certified``: the recommendation's
    sentence on what "certified" means, :func:`pex.evaluation.procedures.certified_text`; ``guardrails``: the
    comparison's guardrail verdicts, for the warnings about their bounds)."""
    certified = certified or certified_text(CERTIFICATION, crossfit is not None)
    holdout = fit["holdout"]
    if crossfit is not None:
        rows = (f"Policy values are doubly-robust estimates on all {evaluation['n_units']:,} units, cross-fitted: a hash of "
                "the unit id splits them in two halves, each policy is two half-policies each built by a fit that never saw "
                "one half, and each unit is valued (and served) with the half-policy that never saw it. The guarantee is "
                "asymptotic (the half-policies settle as the sample grows). ")
    else:
        rows = (f"Policy values are doubly-robust estimates on {evaluation['n_units']:,} held-out units "
                f"({holdout['share']:.0%} of the experiment, chosen by a hash of the unit id) that no effect model, reward "
                "model or policy-building step saw. ")
    return [
        "Assignment was random with the stated propensities (the experiment's allocation or its propensity column); "
        "every off-policy value rests on that. A sample-ratio mismatch above means this may not hold.",
        rows + "Value and lift intervals are two-sided 95%; guardrail bounds are one-sided 95%.",
        certified + " The recommended policy's value and lift bounds are adjusted for having been chosen among the "
        "certified ones.",
        "Policies, trees and the weight search were built on the other units (out-of-fold estimates); values the search "
        "reports there are in-sample (the best of many points on the same units) and optimistic, which is why each "
        "candidate is judged on units its models never saw.",
        "Estimates describe the population and period of the experiment: effects can drift after launch (novelty, "
        "seasonality, a changed product), so keep some exploration and re-evaluate with the logged decisions.",
        "Served policies include their exploration share: budgets, treated shares and guardrail harms are those of the "
        "mixture that is actually served.",
        *guardrail_caveats(guardrails or []),
    ]


def guardrail_caveats(harms: list[Harm]) -> list[str]:
    """Warnings about guardrail bounds, one per metric: few control events of a count or binary guardrail (its bound
    rests on a rough normal approximation), and a control mean of 0 under a relative ``max_harm`` (nothing that
    raises the metric can be certified)."""
    out = []
    for metric in dict.fromkeys(h.metric for h in harms):
        h = next(h for h in harms if h.metric == metric)
        if h.few_events:
            out.append(f"Guardrail {metric} has only {h.control_events:,.0f} events in control on the units that certify "
                       f"(fewer than about {FEW_EVENTS}): its harm bounds rest on a normal approximation that is rough with "
                       "so few events, and relative changes of a rare event are noisy; a larger experiment or a longer "
                       "window makes them reliable.")
        if h.basis == "absolute" and h.max_harm_abs is None and h.max_harm is not None:
            out.append(f"Guardrail {metric} has a control mean of 0 on the units that certify, so its relative max_harm "
                       "cannot be applied: harm is judged in absolute terms against a limit of 0, which no policy that "
                       f"raises {metric} at all can meet, so it cannot be certified. Set max_harm_abs (a tolerated change "
                       f"in {metric}'s own units) in the spec instead.")
    return out
