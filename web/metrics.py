"""Prometheus metrics of the server, correct under several gunicorn workers.

With ``PROMETHEUS_MULTIPROC_DIR`` set (``pex serve`` sets it), prometheus-client keeps each worker's values in
files there and ``/metrics`` sums them over the workers; without it (the Flask test client, ``--dev``), the
process's own registry is served.

The monitor's gauges (drift, staleness) are not kept by any worker: :class:`MonitorCollector` reads the newest
stored monitor report of each live policy from the store at scrape time (one query), so every worker answers the
same whichever serves the scrape.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
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
from prometheus_client.core import GaugeMetricFamily

from pex.errors import PexError

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


class MonitorCollector:
    """Gauges from the newest stored monitor report of each live policy (:func:`pex.services.monitoring.latest_reports`):
    ``pex_drift_psi`` and ``pex_drift_flag`` per policy and feature, ``pex_policy_age_days``, ``pex_policy_stale``
    and ``pex_monitor_report_age_seconds`` per policy. A store that cannot be read leaves them out: the scrape
    still answers with the serving metrics."""

    def __init__(self, reports: Callable[[], dict[str, dict[str, Any]]]) -> None:
        self.reports = reports

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """The gauges, read now."""
        try:
            reports = self.reports()
        except PexError:
            return
        psi = GaugeMetricFamily("pex_drift_psi", "Population-stability index of a served feature against its "
                                "training profile, newest monitor report", labels=["policy", "feature"])
        flag = GaugeMetricFamily("pex_drift_flag", "1 when a served feature drifted (psi, js, missing or unseen beyond "
                                 "the spec's thresholds), newest monitor report", labels=["policy", "feature"])
        age = GaugeMetricFamily("pex_policy_age_days", "Age of the live policy version in days", labels=["policy"])
        stale = GaugeMetricFamily("pex_policy_stale", "1 when the live policy or its data is older than max_age_days",
                                  labels=["policy"])
        report_age = GaugeMetricFamily("pex_monitor_report_age_seconds", "Seconds since the newest monitor report",
                                       labels=["policy"])
        now = datetime.now(UTC)
        for policy, report in sorted(reports.items()):
            for row in report.get("drift", {}).get("features", []):
                if row.get("psi") is not None:
                    psi.add_metric([policy, row["feature"]], float(row["psi"]))
                if row.get("missing_rate") is not None:  # a feature the log does not hold is not judged
                    flag.add_metric([policy, row["feature"]], 1.0 if row.get("drifted") else 0.0)
            ages = report.get("staleness", {})
            if ages.get("policy_age_days") is not None:
                age.add_metric([policy], float(ages["policy_age_days"]))
            stale.add_metric([policy], 1.0 if ages.get("stale") else 0.0)
            made = datetime.fromisoformat(report["created_at"])
            report_age.add_metric([policy], max(0.0, (now - made).total_seconds()))
        yield from (psi, flag, age, stale, report_age)


def exposition(ws: Any = None) -> tuple[bytes, str]:
    """The metrics text and its content type: all workers' sum in multiprocess mode, else this process's; with
    ``ws`` (the workspace), followed by the monitor's gauges (:class:`MonitorCollector`)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        body = generate_latest(registry)
    else:
        body = generate_latest()
    if ws is not None:
        from pex.services.monitoring import latest_reports  # the store and the engine, only when scraped

        monitored = CollectorRegistry()
        monitored.register(MonitorCollector(lambda: latest_reports(ws)))
        body += generate_latest(monitored)
    return body, CONTENT_TYPE_LATEST


def worker_gone(pid: int) -> None:
    """Forget a dead worker's live gauges (gunicorn's child_exit hook)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(pid)
