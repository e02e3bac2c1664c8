"""How the pages write a stored time: one format for every page (``2026-12-07 19:33 UTC``), and ISO 8601 for the
JSON twins' raw values."""

from __future__ import annotations

from datetime import UTC, datetime


def when(value: datetime | str | None, seconds: bool = False) -> str:
    """A stored time in UTC as the pages write it (with seconds where they matter: a job's start and end); '' when
    missing. Stored times are aware (the store writes UTC); a naive one, or an ISO string from a record's
    ``to_dict``, is read as UTC."""
    if value is None:
        return ""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC" if seconds else "%Y-%m-%d %H:%M UTC")


def iso_time(value: datetime | None) -> str | None:
    """A stored time for the JSON twin (ISO 8601), None when missing."""
    return value.isoformat() if value is not None else None
