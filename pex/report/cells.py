"""Reading a policy row or document, for every view of it (HTML, charts, terminal): the kind and tree behind a
cross-fitted (routing) policy."""

from __future__ import annotations


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

