"""The results pages of the UI: an experiment's page (health, average effects, heterogeneity, runs, jobs) and a
run's page (what it did, its downloads). Views only read what :mod:`pex.services.pages` builds.

Two responses set their own Content-Security-Policy (the app's ``after_request`` hook keeps a header a view set):
the offline report, which is one self-contained HTML file with inline CSS and inline SVG, served exactly as
``pex run`` writes it, and the forest plot, an SVG file whose shapes carry matplotlib's inline styles. Both get no
script and no network at all (``default-src 'none'``), only their own inline styles and data: images.
"""

from __future__ import annotations

import json

from flask import Blueprint, Response, abort, current_app
from flask_login import login_required

from pex.services.pages.experiment import effects_csv, experiment_page, forest_svg
from pex.services.pages.runs import run_page, run_policy, run_report, run_summary
from web.ui.twins import page, workspace

bp = Blueprint("results", __name__, url_prefix="/ui")

# what a self-contained document (the report, a chart) may load: its own inline styles and data: images, nothing else
DOCUMENT_CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'self'; "
                "base-uri 'none'; form-action 'none'")


@bp.app_template_global()
def has_endpoint(endpoint: str) -> bool:
    """Whether the app has ``endpoint``, so a page links only to pages that exist (in this app and version)."""
    return endpoint in current_app.view_functions


def _download(body: str, mimetype: str, filename: str) -> Response:
    # filenames are built from experiment names ([a-z0-9_-]), run ids and policy names: no quoting problem
    return Response(body, mimetype=mimetype, headers={"Content-Disposition": f'attachment; filename="{filename}"'})


@page(bp, "/experiments/<name>", "experiment.html")
def experiment(name: str) -> dict:
    """Health, average effects, what the newest run found, runs and jobs of one experiment."""
    return experiment_page(workspace(), name)


@bp.get("/experiments/<name>/effects.csv")
@login_required
def effects_download(name: str) -> Response:
    """The average-effects table as CSV (means, lift with its CI, relative lift, p and Holm p, method)."""
    return _download(effects_csv(workspace(), name), "text/csv", f"{name}-effects.csv")


@bp.get("/experiments/<name>/forest.svg")
@login_required
def forest(name: str) -> Response:
    """The forest plot of the average effects (the report's chart), as an image the page embeds."""
    svg = forest_svg(workspace(), name)
    if not svg:
        abort(404)
    response = Response(svg, mimetype="image/svg+xml")
    response.headers["Content-Security-Policy"] = DOCUMENT_CSP
    return response


@page(bp, "/runs/<int:run_id>", "run.html")
def run(run_id: int) -> dict:
    """One pipeline run: when, on which data, with which settings, who asked, what it recommends, its downloads."""
    return run_page(workspace(), run_id)


@bp.get("/runs/<int:run_id>/summary.json")
@login_required
def summary_download(run_id: int) -> Response:
    """The run's summary.json, as stored."""
    body = json.dumps(run_summary(workspace(), run_id), indent=2, allow_nan=False) + "\n"
    return _download(body, "application/json", f"run-{run_id}-summary.json")


@bp.get("/runs/<int:run_id>/policies/<policy>.json")
@login_required
def policy_download(run_id: int, policy: str) -> Response:
    """One policy document of the run (the version the run stored)."""
    body = json.dumps(run_policy(workspace(), run_id, policy), indent=2, allow_nan=False) + "\n"
    return _download(body, "application/json", f"{policy}.json")


@bp.get("/runs/<int:run_id>/report.html")
@login_required
def report(run_id: int) -> Response:
    """The offline evaluation report of the run, served as is (its own CSP: inline styles, no script)."""
    response = Response(run_report(workspace(), run_id), mimetype="text/html")
    response.headers["Content-Security-Policy"] = DOCUMENT_CSP
    return response
