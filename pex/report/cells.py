"""Reading policy rows and documents, for every view of them (HTML, charts, terminal): the kind and tree behind a
cross-fitted (routing) policy, and the policy each Pareto candidate of the weight search became."""

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


def candidate_policies(candidates: list[dict], policies: list[dict], experiment: str | None = None) -> dict[int, dict]:
    """The policy row each Pareto candidate became, by candidate index.

    A tuned policy records the weights and budget of the candidate it was built from (its distilled tree copies them,
    so value policies are matched first); with ``experiment``, rows named ``<experiment>-pareto-<i>`` are the fallback.
    """
    tuned = sorted((p for p in policies if p.get("tuning")), key=lambda p: base_kind(p) != "value")
    out: dict[int, dict] = {}
    for i, c in enumerate(candidates):
        match = next((p for p in tuned if p["tuning"].get("weights") == c.get("weights")
                      and p["tuning"].get("budget") == c.get("budget")), None)
        if match is None and experiment is not None:
            match = next((p for p in policies if p.get("name") == f"{experiment}-pareto-{i + 1}"), None)
        if match is not None:
            out[i] = match
    return out
