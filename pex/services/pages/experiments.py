"""The experiments list: every experiment of the workspace with the state an owner checks first."""

from __future__ import annotations

from typing import Any

from pex.store.workspace import Workspace

ACTIVE = ("queued", "running")


def srm_state(analysis: dict[str, Any] | None) -> dict[str, str]:
    """The sample-ratio check of an analysis as words and a tone (good | bad | unclear): never colour alone."""
    srm = (analysis or {}).get("srm")
    if not srm:
        return {"text": "not checked yet", "tone": "unclear"}
    if srm.get("ok"):
        return {"text": f"arm sizes as planned (p = {srm['p_value']:.3g})", "tone": "good"}
    return {"text": f"sample-ratio mismatch (p = {srm['p_value']:.2g}): check the assignment", "tone": "bad"}


def experiments_page(ws: Workspace) -> dict[str, Any]:
    """The dict behind /ui/experiments and its JSON twin: one row per experiment, display text next to raw values."""
    live = ws.live_versions()
    running = _active_jobs(ws)
    rows = []
    for exp in ws.list_experiments():
        name = exp["name"]
        analysis = ws.latest_analysis(name)
        srm = srm_state(analysis)
        runs = ws.list_runs(name, limit=1) if exp["current_version"] is not None else []
        last = runs[0] if runs else None
        policies = [p.name for p in ws.list_policies(name)] if exp["current_version"] is not None else []
        live_here = sorted(f"{p} v{live[p]}" for p in policies if p in live)
        jobs_here = [j for j in running if j.get("experiment") == name]
        arms = (analysis or {}).get("arms") or []
        rows.append({
            "name": name,
            "owner": exp["owner"] or "",
            "arms": ", ".join(arms) if arms else "-",
            "n_units": exp["n_units"],
            "units": f"{exp['n_units']:,}" if exp["n_units"] is not None else "-",
            "dataset_version": exp["current_version"],
            "version": f"v{exp['current_version']}" if exp["current_version"] is not None else "-",
            "srm_ok": None if analysis is None else bool(analysis["srm"]["ok"]),
            "srm": srm["text"],
            "srm_tone": srm["tone"],
            "last_run_id": last["id"] if last else None,
            "last_run": _run_text(last),
            "live_policies": live_here,
            "live": ", ".join(live_here) if live_here else "none",
            "running_jobs": [j["id"] for j in jobs_here],
            "jobs": ", ".join(f"{j['kind']} ({j['status']})" for j in jobs_here) if jobs_here else "none",
        })
    return {"title": "Experiments", "experiments": rows, "count": len(rows)}


def _run_text(run: dict[str, Any] | None) -> str:
    if run is None:
        return "no run yet"
    when = str(run.get("created_at") or "")[:16].replace("T", " ")
    headline = run.get("headline") or "finished"
    return f"{when}: {headline}"


def _active_jobs(ws: Workspace) -> list[dict[str, Any]]:
    """Queued and running jobs of every experiment (newest first)."""
    list_jobs = getattr(ws, "list_jobs", None)
    if list_jobs is None:  # a store from before the jobs table
        return []
    return [j.to_dict() for j in list_jobs(status=ACTIVE)]
