"""`pex monitor NAME`: how a live policy's traffic compares with what it was trained on, and how old it is.

One report per call (:func:`monitor`): the features of the decisions served since the live version went out against
the training profile its fit stored (:mod:`pex.monitor.drift`), the served arm shares against the shares the policy
itself gives the experiment's units, and staleness (:mod:`pex.monitor.staleness`), with the experiment's owner and
on-call. Reports are stored (``monitor_reports``), so /metrics and ``pex check`` read the newest without measuring.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from pex.errors import NotFoundError
from pex.experiment.spec import MAX_AGE_DAYS, ExperimentSpec
from pex.monitor.drift import MIN_DECISIONS, PROFILE_FILE, TOO_FEW, drift, psi
from pex.monitor.staleness import staleness as ages
from pex.policy.base import Policy
from pex.services.models import effect_model_by_id
from pex.store.records import PolicyRecord
from pex.store.workspace import DatasetVersion, Workspace

NO_PROFILE = "no training profile: refit (`pex fit {experiment}`) to monitor drift"
EXPECTED_BASIS = "the live policy's action probabilities averaged over the experiment's stored units"


def monitor(ws: Workspace, policy: str, *, store: bool = True, now: datetime | None = None) -> dict[str, Any]:
    """The monitor report of ``policy``'s live version (shape in the module docstring of :mod:`pex.cli.monitoring`
    and docs/operations.md), stored unless ``store`` is false. ``now`` dates the report and the ages (tests)."""
    now = now or datetime.now(UTC)
    version = ws.live_versions().get(policy)
    if version is None:
        raise NotFoundError(f"policy {policy!r} is not live", f"publish it first: `pex publish {policy}`; "
                            "`pex releases` lists what is live")
    record = ws.get_policy(policy, version)
    since = next(r.created_at for r in reversed(ws.releases(policy)) if r.to_version == version)
    served = ws.read_decisions(policy=policy)
    served = served[(served["version"] == version) & (served["decided_at"] >= pd.Timestamp(since))]
    features = [f if isinstance(f, dict) else json.loads(f) if isinstance(f, str) else {} for f in served["features"]]
    frame = pd.DataFrame.from_records(features, index=range(len(features)))

    data = _policy_dataset(ws, record)
    spec = _current_spec(ws, record.experiment) or (ws.load_dataset_spec(data.id) if data else None)
    thresholds = spec.monitor.to_dict() if spec else None
    notes: list[str] = []
    fit_profile = _profile(ws, record)
    if fit_profile is None:
        notes.append(NO_PROFILE.format(experiment=record.experiment))
        drifted: dict[str, Any] = {"thresholds": thresholds, "features": [], "drifted": [], "judged": False,
                                   "n": len(frame), "note": notes[-1]}
    else:
        logged = set().union(*(f.keys() for f in features)) if features else set()
        drifted = drift(fit_profile, frame, thresholds, logged=logged)
        if features and not logged & set(fit_profile["features"]):
            notes.append("the live policy reads no feature (its server logs none): nothing to compare with training")
    if len(served) < MIN_DECISIONS:
        notes.append(f"{TOO_FEW}: {len(served)} since version {version} went live, {MIN_DECISIONS} needed to judge")

    report = {
        "policy": policy, "version": version, "experiment": record.experiment, "created_at": now.isoformat(),
        "since": since.isoformat(), "decisions": len(served),
        "owner": spec.owner if spec else "", "oncall": spec.oncall if spec else None,
        "drift": drifted,
        "arms": _arms(ws, record, data, served["arm"], thresholds),
        "staleness": ages(record.created_at, data.created_at if data else None,
                          spec.max_age_days if spec else MAX_AGE_DAYS, now=now),
        "notes": notes,
    }
    if store:
        report["id"] = ws.put_monitor_report(policy, version, record.experiment, report)
    return report


def latest_reports(ws: Workspace) -> dict[str, dict[str, Any]]:
    """The newest stored report of every live policy (those never monitored are absent), by policy."""
    live = ws.live_versions()
    return {name: report for name, report in ws.latest_monitor_reports().items() if name in live}


def staleness(ws: Workspace, experiment: str, now: datetime | None = None) -> dict[str, Any]:
    """Staleness of ``experiment``'s live policies: ``{"experiment", "max_age_days", "policy_age_days",
    "data_age_days", "stale", "why", "policies": {name: ages}}``, the top-level ages the oldest live policy's;
    ``stale`` is None when none of its policies is live, else whether any is stale."""
    spec = _current_spec(ws, experiment)
    max_age = spec.max_age_days if spec else MAX_AGE_DAYS
    versions = {dv.id: dv for dv in ws.list_dataset_versions(experiment)}
    out: dict[str, dict[str, Any]] = {}
    for name, version in sorted(ws.live_versions().items()):
        record = ws.get_policy(name, version)
        if record.experiment != experiment:
            continue
        data = versions.get(_lineage(record.document).get("dataset"))
        out[name] = ages(record.created_at, data.created_at if data else None, max_age, now=now)
    oldest = {key: max((s[key] for s in out.values() if s[key] is not None), default=None)
              for key in ("policy_age_days", "data_age_days")}
    return {"experiment": experiment, "max_age_days": max_age, **oldest,
            "stale": any(s["stale"] for s in out.values()) if out else None,
            "why": sorted({w for s in out.values() for w in s["why"]}), "policies": out}


def _lineage(document: dict[str, Any]) -> dict[str, Any]:
    lineage = document.get("lineage")
    return lineage if isinstance(lineage, dict) else {}


def _fit_ids(document: dict[str, Any]) -> list[str]:
    """The fits a policy document was built from: its own lineage's, then (a routing policy, e.g. a canary under
    rollout) its routes', in order, so the first route with models names the profile."""
    ids = [_lineage(document).get("fit_run")]
    for route in (document.get("routing") or {}).get("routes", []):
        if isinstance(route, dict) and isinstance(route.get("policy"), dict):
            ids += _fit_ids(route["policy"])
    return [i for i in dict.fromkeys(ids) if isinstance(i, str)]


def _profile(ws: Workspace, record: PolicyRecord) -> dict[str, Any] | None:
    for fit_id in ([record.fit_id] if record.fit_id else []) + _fit_ids(record.document):
        try:
            fit, _summary = ws.find_fit(fit_id)
        except NotFoundError:
            continue
        if (ws.artifacts / fit.artifact / PROFILE_FILE).is_file():  # fits before the profile existed have none
            return json.loads(ws.read_fit_file(fit, PROFILE_FILE))
    return None


def _policy_dataset(ws: Workspace, record: PolicyRecord) -> DatasetVersion | None:
    """The dataset version the policy was learned from (its lineage), else the experiment's current one."""
    wanted = _lineage(record.document).get("dataset")
    versions = ws.list_dataset_versions(record.experiment) if record.experiment else []
    return next((dv for dv in versions if dv.id == wanted), None) or (max(versions, key=lambda v: v.version)
                                                                        if versions else None)


def _current_spec(ws: Workspace, experiment: str | None) -> ExperimentSpec | None:
    """The spec of the experiment's current dataset version: its settings (thresholds, max age, on-call) are the
    owner's latest word, even for a policy learned on older data."""
    if not experiment:
        return None
    try:
        return ws.load_dataset_spec(ws.dataset_version(experiment).id)
    except NotFoundError:
        return None


def _arms(ws: Workspace, record: PolicyRecord, data: DatasetVersion | None, served: pd.Series,
          thresholds: dict[str, float] | None) -> dict[str, Any]:
    """Served arm shares against the policy's own expectation over the experiment's units, and their PSI."""
    arms = list(record.document.get("arms", []))
    counts = served.value_counts()
    n = len(served)
    shares = {arm: float(counts.get(arm, 0) / n) if n else 0.0 for arm in arms}
    out: dict[str, Any] = {"served": shares, "expected": None, "basis": EXPECTED_BASIS, "psi": None, "flag": False,
                           "empty_arms": []}
    if data is None:
        out["basis"] = "no stored units to compute the expectation on"
        return out
    dataset, _dv = ws.load_dataset(data.experiment, data.version)
    policy = Policy.from_document(record.document, lambda vm: effect_model_by_id(ws, vm["fit"]))
    expected = policy.action_probabilities(dataset.frame).mean(axis=0)
    out["expected"] = {arm: float(p) for arm, p in zip(policy.arms, expected, strict=True)}
    if n:
        value, empty = psi(np.array([out["expected"][a] for a in arms]), np.array([shares[a] for a in arms]))
        limit = (thresholds or {}).get("arm_share_psi", 0.2)
        out.update(psi=value, empty_arms=[arms[i] for i in empty], flag=bool(n >= MIN_DECISIONS and value > limit))
    return out
