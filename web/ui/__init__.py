"""The pex web UI: server-rendered pages over the same workspace as the API, for experiment owners.

``create_ui_app()`` builds it; ``pex ui`` runs it under gunicorn in its own processes, so a large upload or a slow
page never holds a worker that answers decisions. It shares the API app's configuration loading, workspace opening
and health routes, but starts no policy server and no decision-log flusher: it serves no decisions.

Every page has a JSON twin (web/ui/twins.py). Views call :mod:`pex.services` (pages are built in
:mod:`pex.services.pages`), never the engine layers.
"""

from __future__ import annotations

import atexit
import re
from dataclasses import dataclass, field
from typing import Any

from flask import Blueprint, Flask, redirect, request, url_for
from markupsafe import Markup, escape

from pex.errors import PexError
from pex.services.access import TokenChecker
from pex.services.settings import load_config
from pex.store.workspace import Workspace

# every response's policy unless a view set its own (the run page's offline report, which has inline styles):
# nothing but pex's own origin, no inline script or style, no framing by other sites, forms post only to pex
CSP = "default-src 'self'; frame-ancestors 'self'; form-action 'self'; base-uri 'self'"
# room for the form's other fields next to the uploaded file (the file itself is limited by UI_MAX_UPLOAD)
FORM_MARGIN = 1024 * 1024


class StoreReadiness:
    """``/readyz`` for the UI: it serves no policies, so it is ready when its store answers and is its own."""

    def __init__(self, ws: Workspace) -> None:
        self.ws = ws

    def readiness(self) -> dict[str, Any]:
        """``{"ok", "store"}``: the store answers and still belongs to this workspace."""
        try:
            self.ws.check_identity()
        except PexError as exc:
            return {"ok": False, "store": exc.message}
        return {"ok": True, "store": "ok"}


@dataclass
class UiState:
    """What the UI's views share in one process (``app.extensions["pex"]``, as in the API app): the workspace, the
    bearer-token checker (JSON twins, /metrics) and the readiness check the shared health blueprint asks."""

    ws: Workspace
    tokens: TokenChecker
    server: StoreReadiness = field(init=False)
    closed: bool = False

    def __post_init__(self) -> None:
        self.server = StoreReadiness(self.ws)

    def close(self) -> None:
        """Release the store (atexit; tests call it)."""
        if not self.closed:
            self.closed = True
            self.ws.close()


def create_ui_app(config: dict[str, Any] | None = None) -> Flask:
    """The UI application, with settings from defaults, ``PEX_CONFIG``, ``PEX_*`` variables and ``config``."""
    from web import open_workspace
    from web.health import health
    from web.ui import auth, errors, home, live, results

    settings = load_config(config)
    app = Flask("web.ui", static_folder=None, template_folder="templates")
    app.config.update(settings)
    app.json.sort_keys = False
    ws = open_workspace(settings)
    state = UiState(ws, TokenChecker(ws, settings["TOKEN_TTL_SECONDS"]))
    app.extensions["pex"] = state
    atexit.register(state.close)

    app.config.update(
        SECRET_KEY=settings["SECRET_KEY"] or auth.stored_secret(ws.home),
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=bool(settings["COOKIE_SECURE"]),
        SESSION_COOKIE_NAME="pex_ui",  # not Flask's "session": another app on the same host keeps its own
        MAX_CONTENT_LENGTH=settings["UI_MAX_UPLOAD"] + FORM_MARGIN,
        WTF_CSRF_TIME_LIMIT=None,  # a token lives as long as the session: a form left open for hours still posts
    )
    app.jinja_env.autoescape = True  # names are data: escape every value in every template (.html is already)
    app.jinja_env.filters["code"] = code_spans
    auth.init(app)
    errors.init(app)

    app.register_blueprint(health)
    app.register_blueprint(Blueprint("ui_static", __name__, static_folder="static", static_url_path="/ui/static"))
    for bp in (home.bp, results.bp, live.bp):
        app.register_blueprint(bp)

    @app.get("/")
    def root():
        return redirect(url_for("home.experiments"))

    @app.get("/favicon.ico")
    def favicon():
        # what a browser asks for on a page that names no icon (a served report, a download): pex's own, not a 404
        return redirect(url_for("ui_static.static", filename="favicon.svg"), 301)

    @app.after_request
    def security_headers(response):
        # a view may set its own policy for its response (the offline report's inline styles); all others get CSP
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault("X-Frame-Options", "SAMEORIGIN")
        if request.blueprint != "ui_static":  # pages and twins show a user's data: never kept by a shared cache
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    return app


def code_spans(text: object) -> Markup:
    """A message or hint with its `backquoted` commands shown as code (the CLI prints the same text with the quotes);
    everything is escaped first, so a name inside the quotes stays data."""
    return Markup(re.sub(r"`([^`]+)`", r"<code>\1</code>", str(escape("" if text is None else text))))
