"""The pex web application: the JSON API that serves decisions and takes outcomes back.

``create_app()`` builds it; ``pex serve`` runs it under gunicorn (``--dev``: Flask's own server). Views parse
the request, call one function of :mod:`pex.services` and format its answer; no modelling rule lives here.
"""

from __future__ import annotations

import atexit
import time
from dataclasses import dataclass
from typing import Any

from flask import Flask, request

from pex.errors import StoreError
from pex.services.access import TokenChecker
from pex.services.decision_log import DecisionLog
from pex.services.serving import PolicyServer
from pex.services.settings import load_config
from pex.store.dead_letters import DeadLetterFile
from pex.store.migrate import head_revision
from pex.store.workspace import Workspace
from web import metrics


@dataclass
class State:
    """What the views share in one process: the workspace, the policy server and the token checker."""

    ws: Workspace
    server: PolicyServer
    tokens: TokenChecker
    closed: bool = False

    def close(self) -> None:
        """Write every buffered decision and release the store (gunicorn's worker_exit hook, atexit)."""
        if not self.closed:
            self.closed = True
            self.server.close()
            self.ws.close()


def open_workspace(settings: dict[str, Any]) -> Workspace:
    """The workspace of ``settings`` (never created here), refused when its schema is older than this code's: the
    API app and the UI app (web.ui) open it alike; `pex serve` and `pex ui` upgrade it before they start gunicorn."""
    ws = Workspace(settings["HOME"], settings["DATABASE_URL"], create=False)
    if not (ws.schema.kind == "revision" and ws.schema.revision == head_revision()):
        ws.close()
        raise StoreError(f"the workspace {ws.home} has an older schema than this server needs",
                         "`pex serve` or `pex ui` upgrades it on start; or run any writing pex command once")
    return ws


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """The application, with settings from defaults, ``PEX_CONFIG``, ``PEX_*`` variables and ``config``."""
    settings = load_config(config)
    app = Flask("web")
    app.config.update(settings)
    app.json.sort_keys = False
    ws = open_workspace(settings)
    decision_log = DecisionLog(ws.append_decisions, settings["FLUSH_SECONDS"], metrics.LOG_BUFFER.set,
                               dead_letter=DeadLetterFile(ws.home), check_store=ws.check_identity,
                               max_buffered=settings["MAX_BUFFERED"], stall_seconds=settings["LOG_STALL_SECONDS"])
    server = PolicyServer(ws, decision_log, settings["REFRESH_SECONDS"], settings["MAX_BATCH"]).start()
    state = State(ws, server, TokenChecker(ws, settings["TOKEN_TTL_SECONDS"]))
    app.extensions["pex"] = state
    atexit.register(state.close)

    from web.api import api
    from web.errors import register_errors
    from web.health import health

    app.register_blueprint(health)
    app.register_blueprint(api, url_prefix="/api/v1")
    register_errors(app)
    _instrument(app)
    return app


def _instrument(app: Flask) -> None:
    """Requests, latency and errors per route template. The clock starts in a WSGI wrapper rather than a
    before_request hook, and the request is read once: the tree policy's whole decision costs less than Flask's
    hook machinery and request proxies, so these count against serving speed (bench/serve.py)."""
    from web.fast import fast_decide

    # the wrapper starts the clock (environ["pex.started"]) for every request, and answers plain decides itself
    app.wsgi_app = fast_decide(app.wsgi_app, app.extensions["pex"], app.config["MAX_CONTENT_LENGTH"])

    @app.after_request
    def observed(response: Any) -> Any:
        current = request._get_current_object()
        rule = current.url_rule
        route = rule.rule if rule is not None else "unmatched"
        status = response.status_code
        metrics.request_counter(route, current.method, status).inc()
        metrics.latency(route).observe(time.perf_counter() - current.environ.get("pex.started", time.perf_counter()))
        if status >= 400:
            metrics.ERRORS.labels(route, str(status)).inc()
        return response
