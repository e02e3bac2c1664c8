"""The experiments list: every experiment of the workspace with the state an owner checks first."""

from __future__ import annotations

from typing import Any

from pex.services.pages.times import when
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
        stale = _stale(ws, name) if live_here else None
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
            "stale_policies": stale,
            "stale": ("no live policy" if stale is None else "fresh" if not stale
                      else "stale: " + ", ".join(stale)),
        })
    return {"title": "Experiments", "experiments": rows, "count": len(rows)}


def _stale(ws: Workspace, experiment: str) -> list[str]:
    """The experiment's live policies that are stale (older, or on older data, than its max_age_days), each with
    why; empty when all are fresh. From the store's dates, not a monitor report: cheap enough for the list."""
    from pex.services.monitoring import staleness

    found = staleness(ws, experiment).get("policies") or {}
    return [f"{name} ({' and '.join(ages.get('why') or [])} older than {ages['max_age_days']} d)"
            for name, ages in sorted(found.items()) if ages.get("stale")]


def _run_text(run: dict[str, Any] | None) -> str:
    if run is None:
        return "no run yet"
    headline = run.get("headline") or "finished"
    return f"{when(run.get('created_at'))}: {headline}"


def _active_jobs(ws: Workspace) -> list[dict[str, Any]]:
    """Queued and running jobs of every experiment (newest first)."""
    return [j.to_dict() for j in ws.list_jobs(status=ACTIVE)]


# -- a new experiment: the upload and the proposed spec as a form ------------------------------------------------

# the plain-language explanation of each term the form uses (shown next to it with _macros term())
TERMS = {
    "unit": "What was randomized: one row per unit (a user, an account, a device). The column must hold a different "
            "id in every row.",
    "arm": "The column saying which version (arm) each unit was assigned to.",
    "control": "The arm every other arm is compared with: usually the current experience, unchanged.",
    "propensity": "Only if units were assigned with unequal, varying chances: the column holding each unit's "
                  "probability of the arm it got. Leave empty for an ordinary A/B test.",
    "features": "What was known about each unit before the experiment (age, country, tenure...). pex uses them to find "
                "who gains and who is harmed. Never include something the experiment itself could have changed.",
    "allocation": "The planned share of units per arm (e.g. 0.5 and 0.5). The sample-ratio check compares the "
                  "actual counts with it; a mismatch means the assignment or the logging is broken.",
    "primary": "Primary metric: the outcome the experiment is meant to improve; the recommendation optimizes it.",
    "secondary": "Secondary metric: reported with its effects, but not optimized.",
    "guardrail": "Guardrail: a metric that must not get worse by more than its limit (max_harm). A policy that may "
                 "break a guardrail is not recommended.",
    "max_harm": "The largest relative harm a guardrail tolerates, as a fraction: 0.05 means at most 5% worse than "
                "control.",
    "pre": "Pre-period (CUPED): the same metric measured before the experiment, if you have it. It makes the results "
           "more precise without changing what they estimate.",
    "goal": "Whether a higher value of the metric is better (increase) or worse (decrease).",
}
GOALS = ("increase", "decrease")
NOTE = "_note."  # the form's hidden fields carrying pex's reason for each guess (not part of the spec)
ROLES = ("primary", "secondary", "guardrail")


def upload_page(max_bytes: int, error: dict[str, str] | None = None) -> dict[str, Any]:
    """The dict behind /ui/experiments/new: step 1, upload a data file (``error``: why the last upload failed)."""
    return {"title": "New experiment", "max_upload_mib": round(max_bytes / 2**20), "error": error}


def proposal_page(ws_home: Any, upload_id: str, form: dict[str, Any] | None = None,
                  errors: list[dict[str, str]] | None = None, owner: str = "") -> dict[str, Any]:
    """The dict behind /ui/experiments/new/<id>: the staged upload, the spec as form values (pex's proposal, or
    the owner's submitted ``form``), pex's reasons, and ``errors`` (FieldError dicts) attached to their fields.
    ``owner`` fills the proposal's empty owner (the logged-in user's name: who uploads usually owns it)."""
    from pex.services import upload

    staged = upload.staged(ws_home, upload_id)
    notes: dict[str, str] = {}
    if form is not None:  # pex's reasons came back with the form (hidden fields): still shown next to each guess
        notes = {key[len(NOTE):]: _one(form, key) for key in form if key.startswith(NOTE)}
        form = {key: value for key, value in form.items() if not key.startswith(NOTE)}
    else:
        proposal = upload.propose(ws_home, upload_id)
        form = upload.spec_to_form(proposal["spec"])
        notes = {n["field"]: n["reason"] for n in proposal.get("notes", [])}
        if owner and not form.get("owner"):
            form["owner"] = owner
    columns = [c["name"] for c in staged.columns]
    metric_names = _metric_names(form)
    chosen_metrics = {n for n in _many(form, "metrics") if n} if "metrics" in form else set(metric_names)
    shown: set[str] = {"name", "description", "owner", "unit", "arm", "control", "propensity", "features",
                       "spec_file", "file", "allocation", "metrics"}
    metrics = []
    for name in metric_names:
        row = {"name": name, "chosen": name in chosen_metrics, "note": notes.get(f"metrics.{name}", "")}
        for key in ("goal", "role", "pre", "max_harm", "description"):
            row[key] = _one(form, f"metrics.{name}.{key}")
            row[f"{key}_note"] = notes.get(f"metrics.{name}.{key}", "")
            shown.add(f"metrics.{name}.{key}")
        shown.add(f"metrics.{name}")
        metrics.append(row)
    arms = [key[len("allocation."):] for key in form if key.startswith("allocation.")]
    shown.update(f"allocation.{arm}" for arm in arms)
    by_field: dict[str, dict[str, str]] = {}
    general = []
    for err in errors or []:
        if err["field"] in shown and err["field"] not in ("file", ""):
            by_field.setdefault(err["field"], err)
        else:
            general.append(err)
    chosen_features = set(_many(form, "features"))
    unit, arm = _one(form, "unit"), _one(form, "arm")
    return {
        "title": "New experiment: check the proposed description",
        "upload": staged.to_dict(),
        "columns": columns,
        "form": {key: form[key] for key in form},
        "features": [{"name": c, "chosen": c in chosen_features} for c in columns
                     if c not in (unit, arm) and c not in metric_names],
        "metrics": metrics,
        "allocation": [{"arm": a, "share": _one(form, f"allocation.{a}")} for a in arms],
        "notes": notes,
        "note_prefix": NOTE,
        "errors": by_field,
        "general_errors": general,
        "terms": TERMS,
        "goals": list(GOALS),
        "roles": list(ROLES),
        "preview_columns": columns,
        "preview": staged.preview,
    }


def _metric_names(form: dict[str, Any]) -> list[str]:
    names = [n for n in _many(form, "metrics") if n] if "metrics" in form else []
    for key in form:
        if key.startswith("metrics.") and key.count(".") >= 2:
            name = key[len("metrics."):].rsplit(".", 1)[0]
            if name not in names:
                names.append(name)
    return names


def _one(form: dict[str, Any], key: str) -> str:
    value = form.get(key, "")
    if isinstance(value, list):
        return str(value[0]) if value else ""
    return "" if value is None else str(value)


def _many(form: dict[str, Any], key: str) -> list[str]:
    value = form.get(key, [])
    if isinstance(value, str):
        return [value] if value else []
    return [str(v) for v in value]
