"""The UI's home pages: login and logout, the experiments list, a new experiment from an uploaded file, and the
job pages (with the actions that start, cancel and re-run jobs). Views only call :mod:`pex.services`."""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, current_app, redirect, render_template, request, url_for
from flask_login import current_user, login_user, logout_user

from pex.errors import NotFoundError, PexError
from pex.services.pages.experiments import experiments_page, proposal_page, upload_page
from pex.services.pages.jobs import job_page, jobs_page
from web.ui import auth
from web.ui.twins import action, actor, can_act, page, workspace

log = logging.getLogger("pex.web.ui")
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
            log.info("ui login refused from %s: %s", request.remote_addr, exc.message)
        else:
            login_user(user)
            log.info("ui login: token:%s (%s) from %s", user.name, user.scope, request.remote_addr)
            return redirect(auth.safe_next(next_url))
    status = 401 if refused else 200
    return render_template("login.html", refused=refused, next_url=next_url or ""), status


@bp.post("/logout")
def logout():
    """Forget the session (a POST, CSRF-checked: a link elsewhere cannot log anyone out)."""
    if current_user.is_authenticated:
        log.info("ui logout: token:%s", current_user.name)
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
# Two steps, nothing stored in the workspace's database until the second succeeds: upload the data file (staged
# under $PEX_HOME/uploads), then check and correct the spec pex proposes from its columns (or upload a spec file).

@page(bp, "/experiments/new", "new_experiment.html")
def new_experiment() -> dict[str, Any]:
    """Step 1: upload the experiment's data (CSV or Parquet)."""
    return upload_page(current_app.config["UI_MAX_UPLOAD"])


@action(bp, "/experiments/new")
def upload_data():
    """Stage the uploaded file and show the spec pex proposes for it; a bad file is shown next to the file field."""
    from pex.services import upload

    sent = request.files.get("data")
    try:
        if sent is None or not sent.filename:
            raise PexError("choose a data file to upload", "a CSV or Parquet file with one row per unit")
        staged = upload.stage(workspace().home, sent.filename, sent.stream, current_app.config["UI_MAX_UPLOAD"])
    except PexError as exc:
        error = {"field": "file", "message": exc.message, "hint": exc.hint}  # whatever went wrong, it is the file's
        return render_template("new_experiment.html", page=upload_page(current_app.config["UI_MAX_UPLOAD"], error),
                               can_act=can_act()), exc.status if exc.status < 500 else 503
    return redirect(url_for("home.proposal", upload_id=staged.id), 303)


@page(bp, "/experiments/new/<upload_id>", "proposal.html")
def proposal(upload_id: str) -> dict[str, Any]:
    """Step 2: the spec pex proposes, as a form to check and correct, each guess with its reason."""
    return proposal_page(workspace().home, upload_id, owner=current_user.name)


@action(bp, "/experiments/new/<upload_id>")
def create_experiment(upload_id: str):
    """Check the corrected spec (or an uploaded spec file) against the data; errors go back next to their fields,
    nothing stored. When it validates: create the experiment (stored, ingested, analysed) and show it."""
    from pex.services import upload

    ws = workspace()
    form = {key: values for key, values in request.form.to_dict(flat=False).items() if key != "csrf_token"}
    spec_file = request.files.get("spec_file")
    try:
        if spec_file is not None and spec_file.filename:
            spec = upload.spec_from_toml(spec_file.read())
            form = upload.spec_to_form(spec)
        else:
            spec = upload.form_to_spec(form)
        errors = [e.to_dict() for e in upload.check(ws.home, upload_id, spec, ws)]
        if not errors:
            created = upload.create(ws, ws.home, upload_id, spec, actor())
            return redirect(url_for("results.experiment", name=created.experiment), 303)
    except PexError as exc:
        if isinstance(exc, NotFoundError):
            raise  # the upload itself is gone: the error page says to upload again
        errors = [upload.FieldError.of(exc).to_dict()]
    page_dict = proposal_page(ws.home, upload_id, form=form, errors=errors)
    return render_template("proposal.html", page=page_dict, can_act=can_act()), 422
