"""Liveness, readiness and metrics."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify, request

from pex.errors import PexError
from web import metrics
from web.auth import requires

health = Blueprint("health", __name__)


@health.get("/healthz")
def healthz():
    """The process answers."""
    return jsonify({"ok": True})


@health.get("/readyz")
def readyz():
    """Ready or not (503), for a load balancer: ``{"ok": true}``. The details (the store's state, each live
    policy's version, the policies that failed to load) name policies and where the store is, so they are shown
    only to an admin token; any other caller, a wrong token included, gets the bare answer."""
    state = current_app.extensions["pex"]
    ready = state.server.readiness()
    answer = ready if _admin(state) else {"ok": ready["ok"]}
    response = jsonify(answer)
    response.status_code = 200 if ready["ok"] else 503
    return response


def _admin(state) -> bool:
    header = request.headers.get("Authorization")
    if not header:
        return False
    try:
        state.tokens.require(header, "admin")
    except PexError:  # no valid admin token, or the store is down: readiness itself must still answer
        return False
    return True


@health.get("/metrics")
@requires("admin")
def prometheus():
    """Prometheus text format, summed over the server's workers."""
    body, content_type = metrics.exposition(current_app.extensions["pex"].ws)
    return Response(body, content_type=content_type)
