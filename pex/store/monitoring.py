"""Stored monitor reports: what `pex monitor` found for a live policy version, newest last."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from pex.serialize import jsonable
from pex.store.engine import db
from pex.store.records import iso
from pex.store.schema import monitor_reports


class MonitorReportsMixin:
    """Workspace methods for monitor reports (:mod:`pex.services.monitoring`)."""

    @db("store a monitor report in")
    def put_monitor_report(self, policy: str, version: int, experiment: str | None, report: dict[str, Any]) -> int:
        """Append one report of ``policy`` version ``version``; returns its id. Append-only, no workspace lock: a
        report is never changed and nothing else numbers it."""
        now = datetime.now(UTC)
        with self.engine.begin() as conn:
            result = conn.execute(monitor_reports.insert().values(policy=policy, version=version, experiment=experiment,
                                                                  created_at=now, report=jsonable(report)))
            return int(result.inserted_primary_key[0])

    @db("read the monitor reports of")
    def latest_monitor_report(self, policy: str) -> dict[str, Any] | None:
        """The newest report of ``policy`` (with its ``id`` and ``stored_at``), or None when it has none."""
        with self._read() as conn:
            row = conn.execute(sa.select(monitor_reports).where(monitor_reports.c.policy == policy)
                               .order_by(monitor_reports.c.id.desc()).limit(1)).first()
        return _report(row) if row is not None else None

    @db("read the monitor reports of")
    def latest_monitor_reports(self) -> dict[str, dict[str, Any]]:
        """The newest report of every policy that has one, by policy: one query (a scrape of /metrics reads it)."""
        newest = sa.select(sa.func.max(monitor_reports.c.id)).group_by(monitor_reports.c.policy).scalar_subquery()
        with self._read() as conn:
            rows = conn.execute(sa.select(monitor_reports).where(monitor_reports.c.id.in_(newest))).all()
        return {row.policy: _report(row) for row in rows}


def _report(row: Any) -> dict[str, Any]:
    return {**row.report, "id": row.id, "stored_at": iso(row.created_at)}
