"""The run page of the UI (``/ui/runs/<id>`` and its ``.json`` twin) and the run's downloads: its summary, its
policy documents and the offline evaluation report, rendered again from the stored summary by the report's own
renderer (so it is the report ``pex run`` wrote, served as is)."""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from typing import Any

from pex.errors import NotFoundError
from pex.report.html import render_report
from pex.report.summary import RunSummary
from pex.services.jobs import get_job
from pex.services.pages.times import iso_time, when
from pex.store.workspace import Workspace

# the settings of a run (RunOptions.to_dict) an owner may want to read, in words, in this order; the rest follow
SETTING_WORDS = {
    "learner": "effect-model learner", "seed": "random seed", "crossfit": "cross-fitting (policies certified on every unit)",
    "holdout": "held-out share (without cross-fitting)", "certification": "certification procedure",
    "dense": "weight vectors tried by the search", "candidates": "Pareto candidates turned into policies",
    "use_ax": "Bayesian optimisation (Ax)", "accept_srm": "accepted sample-ratio mismatch", "reason": "reason given",
}


def _setting_text(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict):  # the policy-building options: "key: value" pairs in words, not JSON
        return "; ".join(f"{k.replace('_', ' ')}: {_setting_text(v)}" for k, v in sorted(value.items())) or "–"
    if isinstance(value, list):
        return json.dumps(value, sort_keys=True)
    return str(value)


# settings that did nothing in a run: Ax's budget without Ax, the held-out share under cross-fitting
AX_ONLY = ("trials", "batch", "ax_seconds")


def _settings_used(settings: dict[str, Any]) -> dict[str, Any]:
    unused = set(AX_ONLY if not settings.get("use_ax") else ()) | ({"holdout"} if settings.get("crossfit") else set())
    return {k: v for k, v in settings.items() if k not in unused}


def _record(ws: Workspace, run_id: int, experiment: str) -> dict[str, Any]:
    """The run's row in its experiment's run list (when, dataset version, the job that made it)."""
    row = next((r for r in ws.list_runs(experiment) if r["id"] == run_id), None)
    if row is None:  # the summary exists, so the run does: only its experiment's list can have lost it
        raise NotFoundError(f"no pipeline run {run_id} of experiment {experiment!r}", "open the experiment's page for its runs")
    return row


def run_summary(ws: Workspace, run_id: int) -> dict[str, Any]:
    """The stored summary of run ``run_id`` (``summary.json``); NotFoundError for an unknown run."""
    try:
        return ws.run_summary(run_id)
    except NotFoundError:
        raise NotFoundError(f"no pipeline run {run_id} in this workspace",
                            "each experiment's page lists its runs (the Runs table)") from None


# Rendered reports by the digest of their summary: a recorded run's summary never changes, and drawing a report's
# charts takes seconds of CPU, so a process renders each one once (a few, each about half a megabyte).
_REPORTS: OrderedDict[str, str] = OrderedDict()
REPORTS_KEPT = 4
_REPORTS_LOCK = threading.Lock()


def run_report(ws: Workspace, run_id: int) -> str:
    """The offline evaluation report of run ``run_id``: the HTML ``pex run`` wrote, rendered again from the stored
    summary (a summary of a format this pex does not read is a PexError with its hint)."""
    summary = run_summary(ws, run_id)
    key = hashlib.sha256(json.dumps(summary, sort_keys=True).encode()).hexdigest()
    with _REPORTS_LOCK:  # gunicorn's threaded workers share the cache
        if key in _REPORTS:
            _REPORTS.move_to_end(key)
            return _REPORTS[key]
    page = render_report(RunSummary.load(summary))  # outside the lock: two first views may both render, harmlessly
    with _REPORTS_LOCK:
        _REPORTS[key] = page
        while len(_REPORTS) > REPORTS_KEPT:
            _REPORTS.popitem(last=False)
    return page


def _stored_version(summary: dict[str, Any], run_id: int, name: str) -> int:
    row = next((p for p in summary.get("policies") or [] if p.get("name") == name), None)
    if row is None:
        names = ", ".join(p["name"] for p in summary.get("policies") or []) or "none"
        raise NotFoundError(f"run {run_id} has no policy {name!r}", f"this run's policies: {names}")
    if row.get("version") is None:
        raise NotFoundError(f"policy {name!r} of this run was not stored with a version",
                            "run the pipeline again: runs of this pex store every policy they make")
    return int(row["version"])


def run_policy(ws: Workspace, run_id: int, name: str) -> dict[str, Any]:
    """The policy document ``name`` as run ``run_id`` stored it (the version that run made)."""
    summary = run_summary(ws, run_id)
    return ws.get_policy(name, _stored_version(summary, run_id, name)).document


def run_page(ws: Workspace, run_id: int) -> dict[str, Any]:
    """Everything the run page shows, as JSON: when, on which dataset version, with which settings, who asked, the
    headline and recommendation, the run's policies (for download) and its history on the dataset version.

    Raises
    ------
    NotFoundError
        For an unknown run id.
    """
    s = RunSummary.load(run_summary(ws, run_id))
    row = _record(ws, run_id, s.experiment)
    job = None
    if row["job_id"] is not None:
        j = get_job(ws, row["job_id"]).to_dict()
        job = {"id": j["id"], "actor": j["actor"], "status": j["status"], "created_at": j["created_at"]}
    settings = _settings_used(s.options or {})
    ordered = [k for k in SETTING_WORDS if k in settings] + [k for k in settings if k not in SETTING_WORDS]
    rec = s.recommendation
    alert, reasons = rec.alert_and_reasons()
    standing = {p.name: s.standing(p) for p in s.policies}
    return {
        "run": {"id": run_id, "experiment": s.experiment, "created_at": iso_time(row["created_at"]),
                "when": when(row["created_at"]), "dataset_version": s.dataset.version, "dataset_id": s.dataset.id,
                "n_units": s.n_units, "pex_version": s.pex_version, "generated_at": s.generated_at,
                "reason": row["reason"] or "", "asked_by": job["actor"] if job else "command line (pex run)",
                "job_id": row["job_id"]},
        "job": job,
        "recommendation": {"policy": rec.policy, "kind": rec.kind, "verdict": rec.verdict, "headline": rec.headline,
                           "version": (rec.document or {}).get("version"), "alert": alert, "reasons": reasons,
                           "cannot_certify": rec.cannot_certify,
                           "from_run": rec.from_run.text if rec.from_run is not None else ""},
        "history": s.history.text if s.history is not None else "",
        "settings": [{"setting": SETTING_WORDS.get(k, k), "key": k, "value": _setting_text(settings[k])} for k in ordered],
        "policies": [{"policy": p.name, "kind": p.kind, "version": p.version if p.version is not None else "–",
                      "standing": standing[p.name], "recommended": "✓ recommended" if p.name == rec.policy else ""}
                     for p in s.policies],
    }
