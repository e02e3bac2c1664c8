"""Stored monitor reports: what `pex monitor` found for a live policy version, newest last."""

from __future__ import annotations


class MonitorReportsMixin:
    """Workspace methods for monitor reports (:mod:`pex.services.monitoring`)."""
