"""The single-unit decide route answered before Flask's dispatch, when the request is an ordinary success.

A tree decision costs about 10 us; Flask's request context, routing, hooks and response object cost some 150 us
around it, which capped `decide` at 0.69x a bare Flask endpoint (bench/serve.py). This WSGI wrapper serves
``POST /api/v1/policies/<name>/decide`` itself with the very same token check and
:meth:`pex.services.serving.PolicyServer.decide` that the Flask view calls, and the same metrics. Anything else
(another route, an odd path or body, any error) goes to Flask untouched, so error answers, 4xx and 5xx alike,
are made in one place (web.errors) and every route keeps one definition of its behaviour; the tests of the
route (auth matrix, malformed bodies, schemathesis) run through this wrapper.

An error can only happen before a decision is logged (``decide`` logs last), so handing a failed request to
Flask never logs a decision twice.
"""

from __future__ import annotations

import io
import json
import re
import time
from collections.abc import Callable, Iterable
from typing import Any

from web import metrics

ROUTE = "/api/v1/policies/<name>/decide"
_PATH = re.compile(r"/api/v1/policies/([A-Za-z0-9._~-]+)/decide")  # plain names only; the rest goes to Flask
_dumps = json.JSONEncoder(separators=(",", ":")).encode  # what Flask's jsonify writes (compact), plus its newline


def fast_decide(flask_wsgi: Callable[..., Iterable[bytes]], state: Any, max_length: int) -> Callable[..., Iterable[bytes]]:
    """Wrap the Flask WSGI callable ``flask_wsgi`` (see the module docstring)."""

    def app(environ: dict, start_response: Callable[..., Any]) -> Iterable[bytes]:
        started = time.perf_counter()
        environ["pex.started"] = started
        match = _PATH.fullmatch(environ.get("PATH_INFO", "")) if environ.get("REQUEST_METHOD") == "POST" else None
        if match is None:
            return flask_wsgi(environ, start_response)
        try:
            length = int(environ.get("CONTENT_LENGTH") or -1)
        except ValueError:
            length = -1
        if not 0 <= length <= max_length:  # chunked, missing or too large: Flask says so
            return flask_wsgi(environ, start_response)
        raw = environ["wsgi.input"].read(length)
        try:
            state.tokens.require(environ.get("HTTP_AUTHORIZATION"), "decide")
            decision = state.server.decide(match.group(1), json.loads(raw))
        except Exception:  # whatever it is, Flask answers it, from the same body
            environ["wsgi.input"] = io.BytesIO(raw)
            return flask_wsgi(environ, start_response)
        payload = (_dumps(decision) + "\n").encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))])
        metrics.decisions(decision["policy"], decision["version"], decision["arm"]).inc()
        metrics.request_counter(ROUTE, "POST", 200).inc()
        metrics.latency(ROUTE).observe(time.perf_counter() - started)
        return [payload]

    app.flask = flask_wsgi  # what it wraps (the tests compare the two)
    return app
