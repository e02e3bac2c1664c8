"""Reading a summary's guardrail cells and policy rows, for every view of it (HTML, charts, terminal).

A cell is a :class:`pex.experiment.guardrail.Harm` as JSON. Summaries written by older releases lack some of
its keys, so the fallbacks live here, once, rather than in each view.
"""

from __future__ import annotations

import math
from typing import Any


def is_relative(cell: dict) -> bool:
    """Whether a cell's harm is relative to the control mean (older cells only name the harm's key)."""
    return cell.get("basis") == "relative" or (cell.get("basis") is None and "absolute_harm" not in cell)


def limit_of(cell: dict | None) -> float | None:
    """The limit a cell's harm must stay within: its ``limit``; else ``max_harm`` when relative and 0 when absolute
    (the rule of :class:`pex.experiment.guardrail.GuardrailRule`); None when there is none."""
    cell = cell or {}
    limit: Any = cell.get("limit")
    if limit is None:
        limit = cell.get("max_harm") if is_relative(cell) else 0.0
    if isinstance(limit, bool) or not isinstance(limit, (int, float)) or not math.isfinite(limit):
        return None
    return float(limit)


def base_kind(p: dict) -> str:
    """A policy row's or document's kind, looking through a routing policy whose routes all share one kind."""
    kind = p.get("kind") or ""
    if kind != "routing":
        return kind
    routes = p.get("routes") or [r.get("policy") or {} for r in (p.get("routing") or {}).get("routes") or []]
    inner = {r.get("kind") for r in routes}
    return inner.pop() if len(inner) == 1 else kind


def tree_of(p: dict) -> dict | None:
    """A tree policy row's tree; a routing row's first route's (the half the summary's distillation describes)."""
    if isinstance(p.get("tree"), dict):
        return p["tree"]
    first = (p.get("routes") or [{}])[0]
    return first.get("tree") if isinstance(first.get("tree"), dict) else None

