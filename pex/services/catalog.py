"""The stored policy set of a fit: list it, or build it first when there is none or new options ask for it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pex.services.policies import BuildOptions, Say, build_policies
from pex.store.workspace import FitRecord, PolicyRecord, Workspace


@dataclass(frozen=True)
class PolicySet:
    """A fit's stored policies, whether they were built just now, and the build's report when they were."""

    fit: FitRecord
    policies: list[PolicyRecord]
    built: bool
    report: dict[str, Any] | None


def policy_set(ws: Workspace, experiment: str, *, fit_id: str | None = None, options: BuildOptions | None = None,
               say: Say | None = None) -> PolicySet:
    """The policies of ``experiment``'s fit (default: the newest), built with ``options`` when given or when none are stored.

    ``options`` means "build with these" (the caller passes it when the user asked for a rebuild or gave any build
    option): options are never silently ignored in favour of an older set.
    """
    record, _summary = ws.get_fit(experiment, fit_id)
    stored = ws.list_policies(experiment, fit_id=record.id)
    if options is None and stored:
        return PolicySet(record, stored, False, None)
    stored, report = build_policies(ws, experiment, options or BuildOptions(), fit_id=record.id, say=say)
    return PolicySet(record, stored, True, report)
