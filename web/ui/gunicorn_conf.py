"""gunicorn settings and hooks for ``pex ui`` (bind, workers and threads come from its command line).

The UI uses gunicorn's plain gthread worker, not the API's PexWorker (web/worker.py): PexWorker bounds a request's
body to a few seconds (BODY_SECONDS) to protect decide from slow clients, while an owner's upload of a large data
file may rightly take minutes. A slow upload holds one of the UI's threads, never a decide worker.
"""

from __future__ import annotations

worker_class = "gthread"
keepalive = 5
# the heartbeat of a worker process (gthread notifies from its main loop, not from request threads): a long upload
# or page does not trip it
timeout = 120
# SIGTERM: requests in flight (an upload) get this long to finish
graceful_timeout = 30
accesslog = None
# see web/gunicorn_conf.py: one fixed control socket per user would be shared with `pex serve`
control_socket_disable = True


def worker_exit(server, worker) -> None:
    """Release the worker's store connections before it exits."""
    app = getattr(worker, "wsgi", None)
    state = getattr(app, "extensions", {}).get("pex") if app is not None else None
    if state is not None:
        state.close()
