"""Staleness: a live policy is stale when it, or the data it was learned from, is older than the spec allows.

A policy learned on an old experiment keeps serving yesterday's population; ``max_age_days`` (the spec's, default
30) bounds both the policy version's age and its dataset's. Pure: the caller reads the two times from the store.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

DAY_SECONDS = 86_400.0


def staleness(policy_time: datetime | None, data_time: datetime | None, max_age_days: int,
              now: datetime | None = None) -> dict[str, Any]:
    """``{"policy_age_days", "data_age_days", "max_age_days", "stale", "why"}``: ages in days at ``now`` (default:
    the current time) of the policy version (its creation) and of its data (the dataset version's ingest time);
    ``why`` lists which is too old (``policy``, ``data``). An unknown time counts as not stale."""
    now = now or datetime.now(UTC)
    policy_age = _age(policy_time, now)
    data_age = _age(data_time, now)
    why = [what for what, age in (("policy", policy_age), ("data", data_age)) if age is not None and age > max_age_days]
    return {"policy_age_days": policy_age, "data_age_days": data_age, "max_age_days": max_age_days,
            "stale": bool(why), "why": why}


def _age(then: datetime | None, now: datetime) -> float | None:
    if then is None:
        return None
    if then.tzinfo is None:  # SQLite hands times back without their zone; pex writes UTC
        then = then.replace(tzinfo=UTC)
    return round((now - then).total_seconds() / DAY_SECONDS, 3)
