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
``metrics``                     a list of the metric names that are metrics (rows not listed are ignored)
``metrics.<name>.goal``         "increase" | "decrease"
``metrics.<name>.role``         "primary" | "secondary" | "guardrail"
``metrics.<name>.pre``          the pre-period covariate column, or "" for none
``metrics.<name>.max_harm``     the guardrail's tolerated relative harm as text ("0.05"), "" when not a guardrail
``metrics.<name>.description``  free text
``metrics.<name>.column``       the metric's column when it is not named as the metric (pex names a metric
                                "revenue_usd" for a column "Revenue (USD)"): keep it in the form, hidden or shown
``file``                        the uploaded data file (errors of :func:`stage` and a gone upload)
``spec_file``                   an uploaded spec file (TOML) used instead of the form (:func:`spec_from_toml`)
==============================  ==========================================================================

Errors about the uploaded data file have ``field == "file"``, about an uploaded spec file (instead of the form)
``field == "spec_file"``. A ``field`` that names no input of the form (``""``, ``"data"``, an unknown key of an
uploaded spec) belongs above the form.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import shutil
import tempfile
import time
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import IO, Any

import pandas as pd

from pex.errors import DataError, NotFoundError, PexError, SpecError
from pex.experiment.data import Dataset, read_table, validate
from pex.experiment.effects import analyze
from pex.experiment.infer import experiment_name, propose_spec
from pex.experiment.spec import DATA_SUFFIXES, NAME_PATTERN, ExperimentSpec, load_spec, parse_spec
from pex.experiment.spec_toml import spec_to_toml
from pex.files import fsync_dir, replacing, write_atomic
from pex.store.workspace import Workspace

__all__ = [
    "Created", "FieldError", "Initialized", "Staged", "check", "cleanup", "create", "form_to_spec", "init_spec",
    "propose", "spec_from_toml", "spec_to_form", "stage", "staged",
]

MAX_BYTES = 200 * 1024 * 1024  # the default upload limit; the UI passes its own (UI_MAX_UPLOAD)
_ID = re.compile(r"[0-9a-f]{32}")  # secrets.token_hex(16): nothing else names a staged upload (no path traversal)
_CHUNK = 1 << 20
_PREVIEW_ROWS = 5
_EXAMPLES = 3


@dataclass(frozen=True)
class FieldError:
    """One problem with the proposed or corrected spec, tied to the form field it concerns ("" for none)."""

    field: str
    message: str
    hint: str

    def to_dict(self) -> dict[str, str]:
        """The error as JSON: field, message, hint."""
        return {"field": self.field, "message": self.message, "hint": self.hint}

    @classmethod
    def of(cls, error: PexError) -> FieldError:
        """The field error a :class:`~pex.errors.PexError` carries (its ``field``, else "")."""
        return cls(error.field or "", error.message, error.hint)


@dataclass(frozen=True)
class Staged:
    """An uploaded table waiting to become an experiment.

    ``columns`` is a list of ``{"name", "dtype", "n_distinct", "n_missing", "examples"}`` (``dtype``: number, integer,
    boolean, text or date; ``examples``: up to 3 distinct values as text); ``preview`` the first rows as
    ``{column: text}`` dicts ("" for an empty cell).
    """

    id: str
    filename: str
    path: Path
    n_rows: int
    columns: list[dict[str, Any]] = field(default_factory=list)
    preview: list[dict[str, str]] = field(default_factory=list)
    created_at: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The upload as JSON (without its server-side path)."""
        return {"id": self.id, "filename": self.filename, "n_rows": self.n_rows, "columns": self.columns,
                "preview": self.preview, "created_at": self.created_at}


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


def uploads_dir(ws_home: str | Path) -> Path:
    """Where staged uploads live: ``$PEX_HOME/uploads``."""
    return Path(ws_home) / "uploads"


def experiments_dir(ws_home: str | Path) -> Path:
    """Where experiments made from uploads keep their spec and data: ``$PEX_HOME/experiments``."""
    return Path(ws_home) / "experiments"


def stage(ws_home: str | Path, filename: str, data: bytes | IO[bytes], max_bytes: int = MAX_BYTES) -> Staged:
    """Save an upload (CSV or Parquet, by its ``filename``'s suffix) under ``$PEX_HOME/uploads/<id>/`` and read it.

    Staged uploads older than a day are removed first (:func:`cleanup`).

    Raises a :class:`~pex.errors.DataError` (``field == "file"``) for another type, a file over ``max_bytes`` or a
    file that is not a readable table with rows; nothing is left behind then.
    """
    shown = _base_name(filename)
    suffix = PurePosixPath(shown).suffix.lower()
    if suffix not in DATA_SUFFIXES:
        raise DataError(f"{shown or 'the file'!r} is neither a CSV nor a Parquet file",
                        "upload the experiment's data as .csv or .parquet (one row per unit)", field="file")
    cleanup(ws_home)  # abandoned uploads go as new ones come, so no scheduler is needed to keep the folder small
    upload_id = secrets.token_hex(16)
    folder = uploads_dir(ws_home) / upload_id
    target = folder / ("data.csv" if suffix == ".csv" else "data.parquet")
    try:
        _save(target, data, max_bytes)
        try:
            frame = read_table(target)
        except PexError as exc:
            raise DataError(exc.message.replace(target.name, repr(shown)), exc.hint, field="file") from None
        if frame.shape[0] == 0:
            raise DataError(f"{shown!r} has a header but no rows", "export the experiment's rows, one per unit",
                            field="file")
        meta = {"filename": shown, "n_rows": int(frame.shape[0]), "columns": _columns(frame),
                "preview": _preview(frame), "created_at": datetime.now(UTC).isoformat(timespec="seconds")}
        write_atomic(folder / "meta.json", json.dumps(meta))
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return _staged(upload_id, folder, meta)


def staged(ws_home: str | Path, upload_id: str) -> Staged:
    """The staged upload ``upload_id`` (random hex); anything else, or an unknown id, is a NotFoundError."""
    if not isinstance(upload_id, str) or not _ID.fullmatch(upload_id):
        raise NotFoundError("no such upload", "upload the file again", field="file")
    folder = uploads_dir(ws_home) / upload_id
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NotFoundError("this upload is gone (finished, or removed after a day unused)", "upload the file again",
                            field="file") from None
    return _staged(upload_id, folder, meta)


def propose(ws_home: str | Path, upload_id: str, name: str | None = None, *, partial: bool = False) -> dict[str, Any]:
    """The spec pex proposes for the upload: ``{"spec": spec dict (TOML shape), "notes": [{"field", "reason"}]}``.

    ``name`` defaults to one made from the upload's file name. When the table has no column that can be the unit,
    the arm or a metric, a DataError (with ``field``) is raised; with ``partial``, the proposal leaves those empty
    instead and adds ``"errors": [{"field", "message", "hint"}]`` (the same shape as :meth:`FieldError.to_dict`),
    so a form can show them on their fields for the owner to fill in.
    """
    st = staged(ws_home, upload_id)
    name = name or experiment_name(PurePosixPath(st.filename).stem)
    return propose_spec(read_table(st.path), name, st.path.name, partial=partial)


def check(ws_home: str | Path, upload_id: str, spec: Mapping[str, Any], ws: Workspace | None = None) -> list[FieldError]:
    """Every problem of ``spec`` (TOML shape) and of the upload's data under it; ``[]`` when it would be accepted.

    The spec is checked first, then the data against it (so one error at a time: the data cannot be checked against
    a spec that does not load). Stores nothing. With ``ws``, a name already taken is reported too.
    """
    st = staged(ws_home, upload_id)
    errors = []
    if ws is not None:
        try:
            _check_name_free(ws, ws_home, str(spec.get("name", "")))
        except PexError as exc:
            errors.append(FieldError.of(exc))
    try:
        _validate(st, spec)
    except PexError as exc:
        errors.append(FieldError.of(exc))
    return errors


def create(ws: Workspace, ws_home: str | Path, upload_id: str, spec: Mapping[str, Any], actor: str) -> Created:
    """Make the experiment: validate again, write ``$PEX_HOME/experiments/<name>/`` (spec.toml + the data), ingest
    it as dataset version 1 and analyse it; then remove the staged upload.

    Raises a :class:`~pex.errors.PexError` (with ``field`` set where one applies) and stores nothing when the spec
    or data is invalid or the name exists already. The dataset version's ``source`` records the file and ``actor``.
    """
    st = staged(ws_home, upload_id)
    _check_name_free(ws, ws_home, str(spec.get("name", "")))
    checked, dataset = _validate(st, spec)
    analysis = analyze(dataset)  # before anything is stored: a failure here leaves no trace
    folder = experiments_dir(ws_home) / checked.name
    data_name = st.path.name
    text = spec_to_toml({**_plain(spec), "data": data_name},
                        [f"made by pex from the upload {st.filename!r} by {actor}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC"])
    _write_experiment_folder(folder, text, st.path)
    try:
        stored = load_spec(folder / "spec.toml")
        dataset = replace(dataset, spec=stored)  # the same rows; the spec now names the data where it stays
        version = ws.put_dataset(dataset, source=f"{folder / data_name} (uploaded as {st.filename!r} by {actor})")
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    # the experiment exists from here on, with its folder: an analysis the store refuses leaves it unanalysed, which
    # its page says and `pex analyze NAME` redoes, never an experiment whose spec and data were removed
    result = {**analysis.to_dict(), "dataset_version": version.to_dict()}
    ws.put_analysis(stored.name, version.id, result)
    shutil.rmtree(st.path.parent, ignore_errors=True)
    return Created(experiment=stored.name, dataset_version=version.version, n_units=dataset.n_units,
                   spec_path=folder / "spec.toml", analysis=result)


def cleanup(ws_home: str | Path, max_age_hours: float = 24) -> int:
    """Remove staged uploads (and half-written ones) older than ``max_age_hours``; returns how many were removed."""
    root = uploads_dir(ws_home)
    if not root.is_dir():
        return 0
    cutoff = time.time() - max_age_hours * 3600
    removed = 0
    for entry in root.iterdir():
        try:
            old = entry.stat().st_mtime < cutoff
        except FileNotFoundError:
            continue
        if old and entry.is_dir() and (_ID.fullmatch(entry.name) or entry.name.startswith(".")):
            shutil.rmtree(entry, ignore_errors=True)
            removed += 1
    return removed


def spec_from_toml(text: str | bytes) -> dict[str, Any]:
    """A spec dict from an uploaded spec file's text; a SpecError with ``field == "spec_file"`` when it is not TOML.

    Its ``data`` entry is ignored by :func:`check` and :func:`create`: the data is the staged upload.
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise SpecError("the spec file is not UTF-8 text", "save the spec as UTF-8", field="spec_file") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"the spec file is not valid TOML: {exc}",
                        'check quoting and brackets; strings need quotes, e.g. unit = "user_id"',
                        field="spec_file") from None


# -- helpers -------------------------------------------------------------------------------------------------------

def _base_name(filename: str) -> str:
    """The uploaded file's own name, without any folder a browser sent with it (shown to the user, never a path)."""
    return PureWindowsPath(PurePosixPath(str(filename or "")).name).name.strip()


def _save(target: Path, data: bytes | IO[bytes], max_bytes: int) -> None:
    """Write the upload to ``target`` atomically, refusing it as soon as it passes ``max_bytes``."""
    with replacing(target) as tmp, open(tmp, "wb") as out:
        if isinstance(data, (bytes, bytearray, memoryview)):
            if len(data) > max_bytes:
                _too_large(max_bytes)
            out.write(data)
        else:
            size = 0
            while chunk := data.read(_CHUNK):
                size += len(chunk)
                if size > max_bytes:
                    _too_large(max_bytes)
                out.write(chunk)
        out.flush()


def _too_large(max_bytes: int) -> None:
    raise DataError(f"the file is larger than the upload limit of {max_bytes / 2**20:,.0f} MiB",
                    "upload a smaller file (Parquet is usually much smaller than CSV), or raise PEX_UI_MAX_UPLOAD "
                    "(ui_max_upload in the PEX_CONFIG file) and restart `pex ui`; `pex init` and `pex ingest` on "
                    "the command line have no limit", field="file")


def _dtype(series: pd.Series) -> str:
    if pd.api.types.is_bool_dtype(series):
        return "boolean"
    if pd.api.types.is_integer_dtype(series):
        return "integer"
    if pd.api.types.is_numeric_dtype(series):
        return "number"
    if pd.api.types.is_datetime64_any_dtype(series) or pd.api.types.is_timedelta64_dtype(series):
        return "date"
    return "text"


def _cell(value: Any) -> str:
    try:
        if pd.isna(value):
            return ""
    except (TypeError, ValueError):  # a list or array in a Parquet cell
        pass
    return str(value)


def _columns(frame: pd.DataFrame) -> list[dict[str, Any]]:
    out = []
    for col in frame.columns:
        series = frame[col]
        try:
            distinct = series.dropna().unique()
            n_distinct = len(distinct)
        except TypeError:  # unhashable cells (lists): not a column any role can use, but it is described
            distinct, n_distinct = series.dropna().to_numpy(), -1
        out.append({"name": str(col), "dtype": _dtype(series), "n_distinct": int(n_distinct),
                    "n_missing": int(series.isna().sum()), "examples": [_cell(v) for v in distinct[:_EXAMPLES]]})
    return out


def _preview(frame: pd.DataFrame) -> list[dict[str, str]]:
    return [{str(col): _cell(value) for col, value in row.items()}
            for _, row in frame.head(_PREVIEW_ROWS).iterrows()]


def _staged(upload_id: str, folder: Path, meta: Mapping[str, Any]) -> Staged:
    path = next((p for p in (folder / "data.csv", folder / "data.parquet") if p.is_file()), None)
    if path is None:
        raise NotFoundError("this upload is gone (finished, or removed after a day unused)", "upload the file again",
                            field="file")
    return Staged(id=upload_id, filename=meta["filename"], path=path, n_rows=meta["n_rows"],
                  columns=meta["columns"], preview=meta["preview"], created_at=meta.get("created_at", ""))


def _plain(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A spec mapping as plain dicts (a form's or TOML's), without ``data`` (the upload's own file replaces it)."""
    return {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in spec.items() if k != "data"}


def _validate(st: Staged, spec: Mapping[str, Any]) -> tuple[ExperimentSpec, Dataset]:
    """The spec as it would be stored (data = the upload) and its validated data; PexErrors carry their field."""
    if not isinstance(spec, Mapping):
        raise SpecError("the spec is not a table of keys and values", "start from the proposed spec", field="")
    raw = {**_plain(spec), "data": st.path.name}
    checked = parse_spec(raw, base_dir=st.path.parent)
    frame = read_table(checked.data, text_columns=(checked.unit, checked.arm))
    return checked, validate(frame, checked, source=repr(st.filename))


# names the UI's own routes take under /ui/experiments/ (web/ui/home.py): an experiment so named could not be opened
RESERVED_NAMES = frozenset({"new"})


def _check_name_free(ws: Workspace, ws_home: str | Path, name: str) -> None:
    if not NAME_PATTERN.fullmatch(name):
        return  # not a name at all: the spec check says so, on the same field
    if name in RESERVED_NAMES:
        raise SpecError(f"{name!r} cannot name an experiment made in the UI: /ui/experiments/{name} is the UI's own page",
                        "choose another name", field="name")
    taken = any(e["name"] == name for e in ws.list_experiments())
    if taken or (name and (experiments_dir(ws_home) / name).exists()):
        raise SpecError(f"an experiment named {name!r} exists already",
                        "choose another name; to add new data to the existing experiment instead, point its spec's "
                        f"data at the new file and run `pex ingest SPEC` (a new dataset version of {name!r})",
                        field="name")


def _write_experiment_folder(folder: Path, spec_text: str, data: Path) -> None:
    """Create ``folder`` with spec.toml and a copy of the data, whole or not at all (it must not exist yet)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        shutil.copyfile(data, tmp / data.name)
        (tmp / "spec.toml").write_text(spec_text, encoding="utf-8")
        for path in (tmp / data.name, tmp / "spec.toml"):
            with open(path, "rb+") as fh:
                os.fsync(fh.fileno())
        if folder.exists():  # os.replace would merge into an empty folder
            raise SpecError(f"an experiment folder {folder.name!r} exists already", "choose another name",
                            field="name")
        os.replace(tmp, folder)
        fsync_dir(folder.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


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


# -- pex init: the same proposal, written next to the data ---------------------------------------------------------

@dataclass(frozen=True)
class Initialized:
    """What ``pex init`` wrote: the spec file, the proposal behind it and, when its data would be refused, why."""

    spec_path: Path
    spec: dict[str, Any]
    notes: list[dict[str, str]]
    problem: FieldError | None

    def to_dict(self) -> dict[str, Any]:
        """The result as JSON."""
        return {"spec_path": str(self.spec_path), "spec": self.spec, "notes": self.notes,
                "problem": self.problem.to_dict() if self.problem else None,
                "next": f"pex run {shlex.quote(str(self.spec_path))}"}


def init_spec(data: str | Path, *, name: str | None = None, out: str | Path | None = None,
              force: bool = False) -> Initialized:
    """Propose a spec for the table ``data`` and write it as TOML (default: ``<data stem>.toml`` beside it).

    The spec's ``data`` is the table's path relative to the spec file. An existing ``out`` is refused unless
    ``force``. The written spec is then loaded and its data validated, as ``pex ingest`` would: a problem (say, a
    metric with empty cells) is returned, not raised, since the file is written for the owner to correct.
    """
    data = Path(data)
    if data.suffix.lower() not in DATA_SUFFIXES:
        raise DataError(f"{data} is neither a CSV nor a Parquet file", "pass the experiment's data as .csv or .parquet")
    frame = read_table(data)
    out = Path(out) if out is not None else data.with_suffix(".toml")
    if out.suffix.lower() != ".toml":
        raise SpecError(f"--out {out} does not end in .toml", "name the spec file like experiment.toml")
    if out.exists() and not force:
        raise SpecError(f"{out} exists already", "pass --force to overwrite it, or --out to write the spec elsewhere")
    relative = Path(os.path.relpath(data.resolve(), out.resolve().parent)).as_posix()
    proposal = propose_spec(frame, name or experiment_name(data.stem), relative)
    comments = ["proposed by `pex init` from the columns of its data: check every line, then `pex run` this file",
                *(f"{n['field']}: {n['reason']}" for n in proposal["notes"])]
    write_atomic(out, spec_to_toml(proposal["spec"], comments))
    problem = None
    try:
        checked = load_spec(out)
        validate(read_table(checked.data, text_columns=(checked.unit, checked.arm)), checked, source=data.name)
    except PexError as exc:
        problem = FieldError.of(exc)
    return Initialized(spec_path=out, spec=proposal["spec"], notes=proposal["notes"], problem=problem)
