"""The UI's home pages: login and logout, the experiments list, a new experiment from an uploaded file, and the
job pages (with the actions that start, cancel and re-run jobs). Views only call :mod:`pex.services`."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, redirect, render_template, request, url_for
from flask_login import current_user, login_user, logout_user

from pex.services.pages.experiments import experiments_page
from pex.services.pages.jobs import job_page, jobs_page
from web.ui import auth
from web.ui.twins import action, actor, page, workspace

bp = Blueprint("home", __name__, url_prefix="/ui")
home = bp


# -- login ---------------------------------------------------------------------------------------------------------

@bp.route("/login", methods=["GET", "POST"])
def login():
    """Paste a token: a view or admin token logs in; anything else is refused with the reason next to the field."""
    next_url = request.values.get("next")
    if current_user.is_authenticated and request.method == "GET":
        return redirect(auth.safe_next(next_url))
    refused = None
    if request.method == "POST":
        try:
            user = auth.check_login(workspace(), request.form.get("token", ""))
        except auth.LoginRefused as exc:
            refused = exc
        else:
            login_user(user)
            return redirect(auth.safe_next(next_url))
    status = 401 if refused else 200
    return render_template("login.html", refused=refused, next_url=next_url or ""), status


@bp.post("/logout")
def logout():
    """Forget the session (a POST, CSRF-checked: a link elsewhere cannot log anyone out)."""
    logout_user()
    return redirect(url_for("home.login"))


# -- experiments -------------------------------------------------------------------------------------------------

@page(bp, "/experiments", "experiments.html")
def experiments() -> dict[str, Any]:
    """Every experiment: arms, units, data version, sample-ratio check, last run, live policies, running jobs."""
    return experiments_page(workspace())


@action(bp, "/experiments/<name>/run")
def run_pipeline(name: str):
    """Run the whole pipeline on the experiment's current dataset as a background job; show the job."""
    from pex.services import jobs

    job = jobs.submit(workspace(), "run", {"experiment": name}, actor())
    return redirect(url_for("home.job", job_id=job.id), 303)


# -- jobs ----------------------------------------------------------------------------------------------------------

@page(bp, "/jobs", "jobs.html")
def jobs() -> dict[str, Any]:
    """The newest jobs of every experiment."""
    return jobs_page(workspace())


@page(bp, "/jobs/<int:job_id>", "job.html")
def job(job_id: int) -> dict[str, Any]:
    """One job: stage, progress, message, log tail, error and hint (pex.js polls the JSON twin)."""
    return job_page(workspace(), job_id)


@action(bp, "/jobs/<int:job_id>/cancel")
def cancel_job(job_id: int):
    """Cancel a queued or running job (a running one stops cleanly at its next step; nothing half-written)."""
    from pex.services import jobs as job_service

    job_service.cancel(workspace(), job_id, actor())
    return redirect(url_for("home.job", job_id=job_id), 303)


@action(bp, "/jobs/<int:job_id>/rerun")
def rerun_job(job_id: int):
    """Queue a failed, cancelled or interrupted job again with the same parameters; show the new job."""
    from pex.services import jobs as job_service

    again = job_service.rerun(workspace(), job_id, actor())
    return redirect(url_for("home.job", job_id=again.id), 303)


# -- a new experiment ----------------------------------------------------------------------------------------------

@page(bp, "/experiments/new", "new_experiment.html")
def new_experiment() -> dict[str, Any]:
    """Step 1 of a new experiment: upload its data file."""
    from flask import current_app

    return {"title": "New experiment", "max_upload_mib": round(current_app.config["UI_MAX_UPLOAD"] / 2**20)}
