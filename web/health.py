"""Liveness, readiness and metrics."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify

from web import metrics
from web.auth import requires

health = Blueprint("health", __name__)


@health.get("/healthz")
def healthz():
    """The process answers."""
    return jsonify({"ok": True})


@health.get("/readyz")
def readyz():
    """The store answers and every live policy is loaded (503 otherwise)."""
    ready = current_app.extensions["pex"].server.readiness()
    response = jsonify(ready)
    response.status_code = 200 if ready["ok"] else 503
    return response


@health.get("/metrics")
@requires("admin")
def prometheus():
    """Prometheus text format, summed over the server's workers."""
    body, content_type = metrics.exposition()
    return Response(body, content_type=content_type)
