"""Prometheus metrics of the server, correct under several gunicorn workers.

With ``PROMETHEUS_MULTIPROC_DIR`` set (``pex serve`` sets it), prometheus-client keeps each worker's values in
files there and ``/metrics`` sums them over the workers; without it (the Flask test client, ``--dev``), the
process's own registry is served.
"""

from __future__ import annotations

import functools
import os
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

REQUESTS = Counter("pex_http_requests", "HTTP requests served, by route template, method and status",
                   ["route", "method", "status"])
LATENCY = Histogram("pex_http_request_seconds", "Time to answer a request, by route template", ["route"],
                    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0))
ERRORS = Counter("pex_http_errors", "Responses with a 4xx or 5xx status, by route template and status",
                 ["route", "status"])
DECISIONS = Counter("pex_decisions", "Decisions served, by policy, version and arm", ["policy", "version", "arm"])
LOG_BUFFER = Gauge("pex_decision_log_buffered", "Decisions buffered in the serving processes, not yet written",
                   multiprocess_mode="livesum")


@functools.lru_cache(maxsize=1024)
def request_counter(route: str, method: str, status: int) -> Any:
    """The requests counter of one label set (labels() takes a lock and builds a key: once per set, not per request)."""
    return REQUESTS.labels(route, method, str(status))


@functools.lru_cache(maxsize=256)
def latency(route: str) -> Any:
    """The latency histogram of one route."""
    return LATENCY.labels(route)


@functools.lru_cache(maxsize=4096)
def decisions(policy: str, version: int, arm: str) -> Any:
    """The decisions counter of one policy version and arm."""
    return DECISIONS.labels(policy, str(version), arm)


def exposition() -> tuple[bytes, str]:
    """The metrics text and its content type: all workers' sum in multiprocess mode, else this process's."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST


def worker_gone(pid: int) -> None:
    """Forget a dead worker's live gauges (gunicorn's child_exit hook)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(pid)
