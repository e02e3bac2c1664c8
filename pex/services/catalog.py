"""The stored policy set of a fit: list it, or build it first when there is none or new options ask for it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pex.services.crossfit import CrossFit
from pex.services.policies import BuildOptions, Say, assemble_policies, load_fit
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


def build_policies(ws: Workspace, experiment: str, options: BuildOptions | None = None, fit_id: str | None = None,
                   say: Say | None = None) -> tuple[list[PolicyRecord], dict[str, Any]]:
    """Build, evaluate and store the policy set of ``experiment``'s fit (default: the newest): the one fold of a
    :class:`pex.services.crossfit.CrossFit`, valued on the fit's held-out units as ``pex run --no-crossfit`` values it."""
    options = options or BuildOptions()
    say = say or (lambda message: None)
    ctx = load_fit(ws, experiment, fit_id)
    crossfit = CrossFit.of([ctx])
    built = assemble_policies(ctx, options, say)
    data = crossfit.evaluation
    say(f"evaluating {len(built.policies)} policies on {data.n:,} held-out units (IPS, SNIPS, DM, DR)")
    rows, _screens = crossfit.compare(built.policies, built, built.owner_objective, ctx.dataset.spec)
    records = ws.put_policies(experiment, [(p.to_document(), r) for p, r in zip(built.policies, rows)], fit_id=ctx.record.id)
    report = {"fit": ctx.record.id, "options": options.to_dict(), "evaluation_rows": data.description,
              "objective_coefficients": built.owner_objective, "calibration": built.calibration,
              "distillation": built.distilled.to_dict()}
    return records, report
