"""gunicorn settings and hooks for ``pex serve`` (bind, workers and threads come from its command line)."""

from __future__ import annotations

# gthread's thread pool with the request head read in the event loop: an idle or half-sent connection holds no
# thread (web/worker.py); bench/serve.py serves its bare Flask baseline with the same class
worker_class = "web.worker.PexWorker"
# a kept-alive connection waits in the event loop (no thread) and is closed after this many idle seconds
keepalive = 5
# a worker loads every live policy (value policies with their effect models) before it serves
timeout = 120
# SIGTERM: workers finish the requests they hold, then flush their decision log (worker_exit)
graceful_timeout = 30
accesslog = None


def post_worker_init(worker) -> None:
    """Move what the worker has loaded (Flask, pandas, the live policies and models) out of the garbage
    collector's sight: otherwise a full collection walks those ~200,000 objects and pauses a request for up to
    76 ms (measured); frozen, the longest pause was 0.4 ms."""
    import gc

    gc.collect()
    gc.freeze()


def worker_exit(server, worker) -> None:
    """Write the worker's buffered decisions before it exits."""
    app = getattr(worker, "wsgi", None)
    state = getattr(app, "extensions", {}).get("pex") if app is not None else None
    if state is not None:
        state.close()


def on_exit(server) -> None:
    """Remove this server's metrics folder (only its own: see pex.services.metrics_folder)."""
    import os

    from pex.services.metrics_folder import remove

    remove(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


def child_exit(server, worker) -> None:
    """Drop a dead worker's live gauges from the summed metrics."""
    from web.metrics import worker_gone

    worker_gone(worker.pid)

# gunicorn 25+ opens a control socket at one fixed path per user ($HOME/.gunicorn/gunicorn.ctl): several pex
# servers on a host would take it from each other. pex serve is stopped and reloaded with signals instead.
control_socket_disable = True
