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

The wrapper also reads every request body before Flask sees it, up to the body limit (``MAX_CONTENT_LENGTH``):
a chunked body (no Content-Length) larger than the limit is then refused with 413 like any other (Flask alone
would read it as a stream and answer 400), and a client that stalls in the middle of its body (the worker's
socket timeout, web/worker.py) gets a 408 here rather than a 500 from deep inside a view.
"""

from __future__ import annotations

import io
import json
import re
import time
from collections.abc import Callable, Iterable
from typing import Any

from web import jsonbody, metrics

ROUTE = "/api/v1/policies/<name>/decide"
_PATH = re.compile(r"/api/v1/policies/([A-Za-z0-9._~-]+)/decide")  # plain names only; the rest goes to Flask
# an oversized body is read and dropped up to this many bytes, so that its sender can read the 413 (see _discard)
DISCARD_BYTES = 64 * 1024 * 1024
_dumps = json.JSONEncoder(separators=(",", ":")).encode  # what Flask's jsonify writes (compact), plus its newline


def _buffer_body(environ: dict, max_length: int) -> None:
    """Read the request body into memory (``environ["pex.body"]``) and describe it by its length, when it has one
    within ``max_length`` bytes or is chunked. An oversized body is read past the limit and dropped (see _discard)
    while its announced length (or the limit plus one, when chunked) stays for Flask to answer 413; a body with an
    unreadable Content-Length is left for Flask to refuse."""
    length = environ.get("CONTENT_LENGTH")
    chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
    stream = environ["wsgi.input"]
    if length:
        try:
            size = int(length)
        except ValueError:
            return
        if size > max_length:
            _discard(stream, size)
        if not 0 < size <= max_length:
            return
        raw = stream.read(size)
        if len(raw) < size:  # the read side was shut at the body deadline (web/worker.py), or the client left
            raise TimeoutError("the body ended early")
    elif chunked:
        raw = stream.read(max_length + 1)
        if len(raw) > max_length:
            _discard(stream, DISCARD_BYTES)
    else:
        return
    environ["pex.body"] = raw
    environ["wsgi.input"] = io.BytesIO(b"" if len(raw) > max_length else raw)
    environ["CONTENT_LENGTH"] = str(len(raw))
    environ.pop("HTTP_TRANSFER_ENCODING", None)  # now a body of known length (werkzeug ignores the length if chunked)


def _discard(stream: Any, most: int) -> None:
    """Read and drop up to ``most`` bytes (at most DISCARD_BYTES) of an oversized body, 64 KiB at a time: a
    client still sending when the server closes gets a connection reset instead of its 413 answer, and gunicorn
    itself drains only 64 KiB. A larger body is cut off there (the client then may see the reset)."""
    left = min(most, DISCARD_BYTES)
    while left > 0 and (chunk := stream.read(min(left, 64 * 1024))):
        left -= len(chunk)


def _timed_out(start_response: Callable[..., Any]) -> Iterable[bytes]:
    """408 in the error shape: the client stopped sending its body (no view ran, nothing was decided)."""
    payload = (_dumps({"ok": False, "error": "the request body did not arrive in time",
                       "hint": "send the whole body without pauses (a buffering proxy in front does)",
                       "status": 408}) + "\n").encode()
    start_response("408 Request Timeout", [("Content-Type", "application/json"), ("Content-Length", str(len(payload))),
                                           ("Connection", "close")])
    return [payload]


def fast_decide(flask_wsgi: Callable[..., Iterable[bytes]], state: Any, max_length: int) -> Callable[..., Iterable[bytes]]:
    """Wrap the Flask WSGI callable ``flask_wsgi`` (see the module docstring)."""

    def app(environ: dict, start_response: Callable[..., Any]) -> Iterable[bytes]:
        started = time.perf_counter()
        environ["pex.started"] = started
        try:
            _buffer_body(environ, max_length)
        except OSError:  # the body's deadline passed (or the client reset): it is not sending its body
            metrics.request_counter("unmatched", environ.get("REQUEST_METHOD", ""), 408).inc()
            return _timed_out(start_response)
        match = _PATH.fullmatch(environ.get("PATH_INFO", "")) if environ.get("REQUEST_METHOD") == "POST" else None
        if match is None:
            return flask_wsgi(environ, start_response)
        raw = environ.get("pex.body")
        if raw is None or len(raw) > max_length:  # missing, unreadable or too large: Flask says so
            return flask_wsgi(environ, start_response)
        try:
            state.tokens.require(environ.get("HTTP_AUTHORIZATION"), "decide")
            decision = state.server.decide(match.group(1), jsonbody.loads(raw))
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
