"""A new experiment from an uploaded table: stage the file, propose a spec, check the owner's corrections, create it.

What the UI's "New experiment" page calls (the same inference as ``pex init DATA``). Nothing is stored in the
workspace's database until :func:`create`; until then an upload lives only under ``$PEX_HOME/uploads/<id>/``.

The form's field names (:func:`spec_to_form`, :func:`form_to_spec`) are also the ``field`` of every
:class:`FieldError`, so the page shows each error next to the input it concerns:

==============================  ==========================================================================
field                           value
==============================  ==========================================================================
``name``                        experiment name ([a-z0-9_-], 1-64 characters)
``description``, ``owner``      free text (may be empty)
``unit``                        the unit id column
``arm``                         the assigned-arm column
``control``                     the control arm's label
``propensity``                  a column of assignment probabilities, or "" for none
``features``                    a list of column names; an empty list means "every other column"
``allocation.<arm>``            the arm's planned share as text ("0.5"); all empty means no planned split
``metrics``                     a list of metric names (= their columns) that are metrics
``metrics.<name>.goal``         "increase" | "decrease"
``metrics.<name>.role``         "primary" | "secondary" | "guardrail"
``metrics.<name>.pre``          the pre-period covariate column, or "" for none
``metrics.<name>.max_harm``     the guardrail's tolerated relative harm as text ("0.05"), "" when not a guardrail
``metrics.<name>.description``  free text
==============================  ==========================================================================

Errors that concern no single field (the file itself) have ``field == ""``; show them above the form.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from pex.store.workspace import Workspace

__all__ = [
    "Created", "FieldError", "Staged", "check", "cleanup", "create", "form_to_spec", "propose", "spec_from_toml",
    "spec_to_form", "stage", "staged",
]

MAX_BYTES = 200 * 1024 * 1024  # the default upload limit (PEX_UI_MAX_UPLOAD_MB in the UI's config may change it)


@dataclass(frozen=True)
class FieldError:
    """One problem with the proposed or corrected spec, tied to the form field it concerns ("" for the file)."""

    field: str
    message: str
    hint: str

    def to_dict(self) -> dict[str, str]:
        """The error as JSON: field, message, hint."""
        return {"field": self.field, "message": self.message, "hint": self.hint}


@dataclass(frozen=True)
class Staged:
    """An uploaded table waiting to become an experiment.

    ``columns`` is a list of ``{"name", "dtype", "n_distinct", "examples"}`` (examples: up to 3 distinct values as
    text); ``preview`` the first rows as ``{column: text}`` dicts.
    """

    id: str
    filename: str
    path: Path
    n_rows: int
    columns: list[dict[str, Any]] = field(default_factory=list)
    preview: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The upload as JSON (without its server-side path)."""
        return {"id": self.id, "filename": self.filename, "n_rows": self.n_rows, "columns": self.columns,
                "preview": self.preview}


@dataclass(frozen=True)
class Created:
    """An experiment made from an upload: its name, first dataset version and its analysis (SRM, effects)."""

    experiment: str
    dataset_version: int
    n_units: int
    spec_path: Path
    analysis: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """The result as JSON."""
        return {"experiment": self.experiment, "dataset_version": self.dataset_version, "n_units": self.n_units,
                "analysis": self.analysis}


def stage(ws_home: str | Path, filename: str, data: bytes | IO[bytes], max_bytes: int = MAX_BYTES) -> Staged:
    """Save an upload (CSV or Parquet, by its ``filename``'s suffix) under ``$PEX_HOME/uploads/<id>/`` and read it.

    Raises a :class:`~pex.errors.DataError` for another type, a file over ``max_bytes`` or a file that is not a
    readable table; nothing is left behind then.
    """
    raise NotImplementedError  # filled in by the next commit


def staged(ws_home: str | Path, upload_id: str) -> Staged:
    """The staged upload ``upload_id`` (random hex); anything else, or an unknown id, is a NotFoundError."""
    raise NotImplementedError


def propose(ws_home: str | Path, upload_id: str, name: str | None = None) -> dict[str, Any]:
    """The spec pex proposes for the upload: ``{"spec": spec dict (TOML shape), "notes": [{"field", "reason"}]}``.

    ``name`` defaults to one made from the upload's file name.
    """
    raise NotImplementedError


def check(ws_home: str | Path, upload_id: str, spec: Mapping[str, Any], ws: Workspace | None = None) -> list[FieldError]:
    """Every problem of ``spec`` (TOML shape) and of the upload's data under it; ``[]`` when it would be accepted.

    Stores nothing. With ``ws``, a name already taken is reported too.
    """
    raise NotImplementedError


def create(ws: Workspace, ws_home: str | Path, upload_id: str, spec: Mapping[str, Any], actor: str) -> Created:
    """Make the experiment: validate again, write ``$PEX_HOME/experiments/<name>/`` (spec.toml + the data), ingest
    it as dataset version 1 and analyse it; then remove the staged upload.

    Raises a :class:`~pex.errors.PexError` (with ``field`` set where one applies) and stores nothing when the spec
    or data is invalid or the name exists already.
    """
    raise NotImplementedError


def cleanup(ws_home: str | Path, max_age_hours: float = 24) -> int:
    """Remove staged uploads older than ``max_age_hours``; returns how many were removed."""
    raise NotImplementedError


def spec_from_toml(text: str) -> dict[str, Any]:
    """A spec dict from an uploaded spec file's text; a SpecError with ``field`` when it is not valid TOML."""
    raise NotImplementedError


def spec_to_form(spec: Mapping[str, Any]) -> dict[str, str | list[str]]:
    """The form's values for ``spec`` (field names in the module docstring): text fields as str, lists as list[str].

    Numbers become text as Python writes them ("0.05"); a missing optional value becomes "".
    """
    form: dict[str, str | list[str]] = {key: _text(spec.get(key)) for key in _TEXT_FIELDS}
    form["features"] = [str(f) for f in spec.get("features") or ()]
    for arm, share in (spec.get("allocation") or {}).items():
        form[f"allocation.{arm}"] = _text(share)
    metrics = spec.get("metrics") or {}
    form["metrics"] = [str(name) for name in metrics]
    for name, entry in metrics.items():
        entry = entry if isinstance(entry, Mapping) else {}
        for key in _METRIC_FIELDS:
            form[f"metrics.{name}.{key}"] = _text(entry.get(key))
        if entry.get("column") not in (None, name):
            form[f"metrics.{name}.column"] = _text(entry["column"])
        if entry.get("max_harm_abs") is not None:
            form[f"metrics.{name}.max_harm_abs"] = _text(entry["max_harm_abs"])
    return form


def form_to_spec(form: Mapping[str, str | list[str]]) -> dict[str, Any]:
    """The spec dict (TOML shape) a submitted form describes; the inverse of :func:`spec_to_form`.

    Accepts plain dicts and ``MultiDict.to_dict(flat=False)`` alike (a one-element list is a single value). Never
    raises: values are passed on as typed (a share that is not a number stays text) so that :func:`check` reports
    each problem on its field. Empty optional fields are left out, as is ``data`` (the upload's own file).
    """
    spec: dict[str, Any] = {}
    for key in _TEXT_FIELDS:
        value = _one(form, key).strip() if key not in ("description", "owner") else _one(form, key)
        if value or key in _REQUIRED_TEXT:
            spec[key] = value
    features = [f for f in _many(form, "features") if f]
    if features:
        spec["features"] = features
    allocation = {key[len("allocation."):]: _number(_one(form, key)) for key in form
                  if key.startswith("allocation.") and _one(form, key).strip()}
    if allocation:
        spec["allocation"] = allocation
    names = _many(form, "metrics") if "metrics" in form else list(dict.fromkeys(
        key[len("metrics."):].rsplit(".", 1)[0] for key in form if key.startswith("metrics.") and key.count(".") >= 2))
    metrics: dict[str, Any] = {}
    for name in (n for n in names if n):
        entry: dict[str, Any] = {}
        for key in (*_METRIC_FIELDS, "column", "max_harm_abs"):
            value = _one(form, f"metrics.{name}.{key}")
            if key != "description":
                value = value.strip()
            if value:
                entry[key] = _number(value) if key in ("max_harm", "max_harm_abs") else value
        metrics[name] = entry
    spec["metrics"] = metrics
    return spec


# the top-level text fields of the form, in the spec's order; the required ones are kept even when empty, so that
# check() reports them as empty on their own field rather than as missing
_TEXT_FIELDS = ("name", "description", "owner", "unit", "arm", "control", "propensity")
_REQUIRED_TEXT = ("name", "unit", "arm", "control")
_METRIC_FIELDS = ("goal", "role", "pre", "max_harm", "description")


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _one(form: Mapping[str, str | list[str]], key: str) -> str:
    value = form.get(key, "")
    if isinstance(value, (list, tuple)):
        value = value[0] if value else ""
    return str(value)


def _many(form: Mapping[str, str | list[str]], key: str) -> list[str]:
    value = form.get(key, [])
    if isinstance(value, str):
        return [value] if value else []
    return [str(v) for v in value]


def _number(text: str) -> float | str:
    """A number typed into the form, or the text itself when it is none (the spec check then names the field)."""
    try:
        return float(text.strip())
    except ValueError:
        return text
