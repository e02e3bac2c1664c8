"""The job pages: one background job (stage, progress, log tail, error and hint) and the recent jobs."""

from __future__ import annotations

from typing import Any

from pex.services.pages.times import when
from pex.store.workspace import Workspace

# what each kind of job does, in words for the page
KINDS = {"run": "pipeline run", "online_start": "start of the online loop", "online_complete": "online round"}
STATUS_TONES = {"queued": "unclear", "running": "unclear", "succeeded": "good", "failed": "bad",
                "cancelled": "unclear", "interrupted": "bad"}
STATUS_WORDS = {"queued": "waiting for a worker", "running": "running", "succeeded": "succeeded", "failed": "failed",
                "cancelled": "cancelled", "interrupted": "interrupted (its worker stopped)"}
CANCELLABLE = ("queued", "running")
RERUNNABLE = ("failed", "cancelled", "interrupted")


def job_view(job: dict[str, Any]) -> dict[str, Any]:
    """A job's dict (JobRecord.to_dict()) with the words the page shows next to the raw values."""
    fraction = float(job.get("fraction") or 0.0)
    status = job["status"]
    return {
        **job,
        "kind_text": KINDS.get(job["kind"], job["kind"]),
        "status_text": STATUS_WORDS.get(status, status),
        "status_tone": STATUS_TONES.get(status, "unclear"),
        "percent": round(100 * fraction),
        "progress_text": f"{round(100 * fraction)}%" + (f" · {job['stage']}" if job.get("stage") else ""),
        "finished": status not in CANCELLABLE,
        "can_cancel": status in CANCELLABLE,
        "can_rerun": status in RERUNNABLE,
        "created": when(job.get("created_at"), seconds=True) or "-",
        "started": when(job.get("started_at"), seconds=True) or "-",
        "ended": when(job.get("finished_at"), seconds=True) or "-",
        "asked_by": job.get("actor") or "-",
    }


def job_page(ws: Workspace, job_id: int) -> dict[str, Any]:
    """The dict behind /ui/jobs/<id> and its JSON twin (what pex.js polls); a NotFoundError for an unknown id."""
    job = job_view(ws.get_job(job_id).to_dict())
    return {"title": f"Job {job_id}", "job": job,
            "log": [{"line": line} for line in job.get("log_tail") or []]}


def jobs_page(ws: Workspace, limit: int = 50) -> dict[str, Any]:
    """The dict behind /ui/jobs: the newest jobs of every experiment."""
    rows = []
    for record in ws.list_jobs(limit=limit):
        job = job_view(record.to_dict())
        rows.append({"id": job["id"], "kind": job["kind_text"], "experiment": job.get("experiment") or "-",
                     "status": job["status"], "state": job["status_text"], "stage": job.get("stage") or "-",
                     "progress": job["progress_text"], "asked_by": job["asked_by"], "created": job["created"]})
    return {"title": "Jobs", "jobs": rows}
