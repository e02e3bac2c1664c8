"""The results pages of the UI: an experiment's page (health, average effects, heterogeneity, runs, jobs) and a
run's page (what it did, its downloads). Views only read what :mod:`pex.services.pages` builds."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("results", __name__, url_prefix="/ui")
