"""The experiment spec: a TOML file that says what the columns of an experiment mean.

``load_spec`` turns the TOML of the README (The experiment spec) into an :class:`ExperimentSpec`. Every
mistake raises :class:`~pex.errors.SpecError` naming the offending key, with a
hint that says how to fix it, so that a typo never turns into a silent default.
"""

from __future__ import annotations

import difflib
import math
import re
import tomllib
import unicodedata
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from pex.errors import SpecError
from pex.names import HINT, check_name, describe, unsafe_character

GOALS = ("increase", "decrease")
ROLES = ("primary", "secondary", "guardrail")
DATA_SUFFIXES = (".csv", ".parquet", ".pq")
NAME_PATTERN = re.compile(r"^[a-z0-9_-]{1,64}$")

_TOP_KEYS = {
    "name", "description", "owner", "data", "unit", "arm", "control",
    "features", "propensity", "allocation", "metrics", "max_age_days", "oncall", "monitor",
}
_REQUIRED_TOP_KEYS = ("name", "data", "unit", "arm", "control", "metrics")
_METRIC_KEYS = {"column", "goal", "role", "pre", "max_harm", "max_harm_abs", "weight", "description"}


@dataclass(frozen=True)
class MetricSpec:
    """One outcome metric of an experiment.

    ``max_harm`` is the largest tolerated *relative* change in the harmful
    direction (``0.02`` = 2%); ``max_harm_abs`` the largest tolerated change in
    the metric's own units, for metrics whose control mean can be 0 (where a
    relative change is undefined). Every guardrail metric carries exactly one
    of them; other metrics carry neither.
    """

    name: str
    column: str
    goal: str = "increase"
    role: str = "primary"
    pre: str | None = None
    max_harm: float | None = None
    weight: float | None = None
    description: str = ""
    max_harm_abs: float | None = None

    @property
    def sign(self) -> int:
        """+1 when larger values are better, -1 when smaller values are better."""
        return 1 if self.goal == "increase" else -1


MAX_AGE_DAYS = 30  # a live policy (or its data) older than this is stale, unless the spec says otherwise


@dataclass(frozen=True)
class MonitorThresholds:
    """When ``pex monitor`` flags a live policy (the spec's optional ``[monitor]`` table; each key optional).

    ``psi``: population-stability index of a numeric feature against its training bins; ``js``: Jensen-Shannon
    distance (base 2, 0..1) of a categorical feature's categories; ``missing_increase``: rise of a feature's missing
    rate over training's (absolute, 0.05 = 5 points); ``unseen``: share of served values in categories training never
    had; ``arm_share_psi``: PSI of the served arm shares against the policy's expected shares.
    """

    psi: float = 0.2
    js: float = 0.1
    missing_increase: float = 0.05
    unseen: float = 0.01
    arm_share_psi: float = 0.2

    def to_dict(self) -> dict[str, float]:
        """The thresholds by name."""
        return {"psi": self.psi, "js": self.js, "missing_increase": self.missing_increase, "unseen": self.unseen,
                "arm_share_psi": self.arm_share_psi}


# the largest sensible value of each threshold: a distance or a rate is at most 1; PSI has no upper bound
_THRESHOLD_MAX = {"psi": math.inf, "js": 1.0, "missing_increase": 1.0, "unseen": 1.0, "arm_share_psi": math.inf}


@dataclass(frozen=True)
class ExperimentSpec:
    """A validated experiment spec. ``data`` is an absolute path."""

    name: str
    data: Path
    unit: str
    arm: str
    control: str
    metrics: dict[str, MetricSpec]
    description: str = ""
    owner: str = ""
    features: tuple[str, ...] | None = None
    propensity: str | None = None
    allocation: dict[str, float] | None = None
    source: Path | None = field(default=None, compare=False)
    max_age_days: int = MAX_AGE_DAYS
    oncall: str | None = None
    monitor: MonitorThresholds = field(default_factory=MonitorThresholds)

    @property
    def metric_columns(self) -> list[str]:
        """The data columns holding the metrics."""
        return [m.column for m in self.metrics.values()]

    @property
    def pre_columns(self) -> list[str]:
        """The data columns holding pre-period covariates (CUPED)."""
        return [m.pre for m in self.metrics.values() if m.pre]

    @property
    def reserved_columns(self) -> set[str]:
        """Columns that can never be features (pre-period covariates can: they are measured before assignment)."""
        cols = {self.unit, self.arm, *self.metric_columns}
        if self.propensity:
            cols.add(self.propensity)
        return cols

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able, canonical form (used for hashing and storage)."""
        return {
            "name": self.name,
            "description": self.description,
            "owner": self.owner,
            "data": str(self.data),
            "unit": self.unit,
            "arm": self.arm,
            "control": self.control,
            "features": list(self.features) if self.features is not None else None,
            "propensity": self.propensity,
            "allocation": dict(self.allocation) if self.allocation else None,
            "metrics": {
                name: {
                    "column": m.column, "goal": m.goal, "role": m.role, "pre": m.pre,
                    "max_harm": m.max_harm, "weight": m.weight, "description": m.description,
                    # only when set, so that the canonical form (and its hash) of a spec without it is unchanged
                    **({"max_harm_abs": m.max_harm_abs} if m.max_harm_abs is not None else {}),
                }
                for name, m in self.metrics.items()
            },
            # the live-operation settings only when set, so that a spec without them keeps its canonical form (and hash)
            **({"max_age_days": self.max_age_days} if self.max_age_days != MAX_AGE_DAYS else {}),
            **({"oncall": self.oncall} if self.oncall is not None else {}),
            **({"monitor": self._monitor_set()} if self.monitor != MonitorThresholds() else {}),
        }

    def _monitor_set(self) -> dict[str, float]:
        defaults = MonitorThresholds().to_dict()
        return {k: v for k, v in self.monitor.to_dict().items() if v != defaults[k]}


def load_spec(path: str | Path, *, require_data: bool = True) -> ExperimentSpec:
    """Read and validate an experiment spec from a TOML file.

    Parameters
    ----------
    path
        The spec file. Its ``data`` entry is resolved relative to this file.
    require_data
        When true (the default), a data file that does not exist is an error.
    """
    path = Path(path)
    if path.is_dir():
        raise SpecError(f"spec {path} is a directory, not a file",
                        "pass the spec's .toml file inside it, e.g. experiments/notification_cadence.toml")
    if not path.is_file():
        raise SpecError(
            f"spec file not found: {path}",
            "pass the path of an experiment spec (.toml), e.g. experiments/notification_cadence.toml",
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise SpecError(f"spec file {path} is not UTF-8 text", "save the spec as UTF-8") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(
            f"spec file {path} is not valid TOML: {exc}",
            'check quoting and brackets; strings need quotes, e.g. unit = "user_id"',
        ) from None
    return parse_spec(raw, base_dir=path.resolve().parent, require_data=require_data, source=path)


def parse_spec(
    raw: dict[str, Any],
    *,
    base_dir: Path,
    require_data: bool = True,
    source: Path | None = None,
) -> ExperimentSpec:
    """Validate an already-parsed spec mapping (see :func:`load_spec`)."""
    _reject_unknown(raw, _TOP_KEYS, where="")
    for key in _REQUIRED_TOP_KEYS:
        if key not in raw:
            raise SpecError(f"spec is missing required key '{key}'", _REQUIRED_HINTS[key], field=key)

    name = _string(raw, "name")
    if not NAME_PATTERN.fullmatch(name):
        raise SpecError(
            f"spec key 'name' = {name!r} is not a valid experiment name",
            "use 1-64 lowercase letters, digits, '_' or '-', e.g. name = \"notification_cadence\"",
            field="name",
        )
    unit = _string(raw, "unit")
    arm = _string(raw, "arm")
    control = unicodedata.normalize("NFC", _string(raw, "control").strip())
    description = _string(raw, "description", default="")
    owner = _string(raw, "owner", default="")
    propensity = _string(raw, "propensity", default=None)

    data = _resolve_data(_string(raw, "data"), base_dir, require_data)
    features = _features(raw)
    allocation = _allocation(raw, control)
    metrics = _metrics(raw)
    max_age_days = _max_age_days(raw)
    oncall = _string(raw, "oncall", default=None)
    monitor = _monitor(raw)

    spec = ExperimentSpec(
        name=name, data=data, unit=unit, arm=arm, control=control, metrics=metrics,
        description=description, owner=owner, features=features, propensity=propensity,
        allocation=allocation, source=source, max_age_days=max_age_days, oncall=oncall, monitor=monitor,
    )
    _check_names(spec)
    _check_columns(spec)
    return spec


_REQUIRED_HINTS = {
    "name": 'add a unique experiment name, e.g. name = "notification_cadence"',
    "data": 'add the data file relative to the spec, e.g. data = "notification_cadence.csv"',
    "unit": 'name the unique unit id column, e.g. unit = "user_id"',
    "arm": 'name the assigned-arm column, e.g. arm = "arm"',
    "control": 'name the control arm\'s label, e.g. control = "control"',
    "metrics": 'add at least one metric table, e.g. [metrics.sessions] with goal = "increase"',
}


def _reject_unknown(table: dict[str, Any], allowed: set[str], where: str) -> None:
    for key in table:
        if key not in allowed:
            close = difflib.get_close_matches(key, sorted(allowed), n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"allowed keys: {', '.join(sorted(allowed))}"
            raise SpecError(f"unknown spec key '{where}{key}'", hint, field=f"{where}{key}")


def _string(table: dict[str, Any], key: str, *, where: str = "", default: Any = ...) -> Any:
    if key not in table:
        if default is ...:
            raise SpecError(f"spec is missing required key '{where}{key}'", f"add {where}{key} = \"...\"",
                            field=f"{where}{key}")
        return default
    value = table[key]
    if not isinstance(value, str) or (not value.strip() and key not in ("description", "owner")):
        raise SpecError(
            f"spec key '{where}{key}' must be a non-empty string, got {value!r}",
            f'quote the value, e.g. {key} = "..."',
            field=f"{where}{key}",
        )
    return value


def _resolve_data(data: str, base_dir: Path, require: bool) -> Path:
    path = (base_dir / data).resolve()
    if path.suffix.lower() not in DATA_SUFFIXES:
        raise SpecError(
            f"spec key 'data' = {data!r} is neither CSV nor Parquet",
            "point data at a .csv, .parquet or .pq file",
            field="data",
        )
    if require and not path.is_file():
        raise SpecError(
            f"data file not found: {path} (spec key 'data' = {data!r})",
            "data is resolved relative to the spec file; fix the path or create the file "
            "(for the demo: `pex demo` or `pex simulate`)",
            field="data",
        )
    return path


def _features(raw: dict[str, Any]) -> tuple[str, ...] | None:
    if "features" not in raw:
        return None
    value = raw["features"]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise SpecError(
            f"spec key 'features' must be a list of column names, got {value!r}",
            'write e.g. features = ["age", "country"], or leave it out to use all other columns',
            field="features",
        )
    if not value:
        raise SpecError("spec key 'features' is an empty list", "list the feature columns, or leave features out to use all other columns",
                        field="features")
    if len(set(value)) != len(value):
        dup = sorted({v for v in value if value.count(v) > 1})
        raise SpecError(f"spec key 'features' lists {dup} more than once", "list each feature once", field="features")
    return tuple(value)


def _max_age_days(raw: dict[str, Any]) -> int:
    value = raw.get("max_age_days", MAX_AGE_DAYS)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise SpecError(f"spec key 'max_age_days' must be a whole number of days above 0, got {value!r}",
                        f"write e.g. max_age_days = 30: a live policy older than that (or whose data is) is stale; "
                        f"leave it out for {MAX_AGE_DAYS}", field="max_age_days")
    return value


def _monitor(raw: dict[str, Any]) -> MonitorThresholds:
    if "monitor" not in raw:
        return MonitorThresholds()
    table = raw["monitor"]
    if not isinstance(table, dict):
        raise SpecError("spec key 'monitor' must be a table of thresholds",
                        "write [monitor] on its own line followed by e.g. psi = 0.2", field="monitor")
    _reject_unknown(table, set(_THRESHOLD_MAX), where="monitor.")
    values: dict[str, float] = {}
    for key, value in table.items():
        top = _THRESHOLD_MAX[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise SpecError(f"spec key 'monitor.{key}' must be a number, got {value!r}",
                            f"write e.g. {key} = {MonitorThresholds().to_dict()[key]}", field=f"monitor.{key}")
        if not 0 < value <= top:
            bound = "above 0" if top == math.inf else f"above 0 and at most {top:g}"
            raise SpecError(f"spec key 'monitor.{key}' = {value} is out of range", f"{key} is a threshold {bound}",
                            field=f"monitor.{key}")
        values[key] = float(value)
    return MonitorThresholds(**values)


def _allocation(raw: dict[str, Any], control: str) -> dict[str, float] | None:
    if "allocation" not in raw:
        return None
    table = raw["allocation"]
    if not isinstance(table, dict) or not table:
        raise SpecError(
            "spec key 'allocation' must be a table of arm = share",
            "write e.g. [allocation] with lines control = 0.5 and treatment = 0.5",
            field="allocation",
        )
    shares: dict[str, float] = {}
    for arm, share in table.items():
        if isinstance(share, bool) or not isinstance(share, (int, float)):
            raise SpecError(
                f"spec key 'allocation.{arm}' must be a number, got {share!r}",
                "give each arm's planned share of units as a number, e.g. 0.5",
                field=f"allocation.{arm}",
            )
        if not math.isfinite(share) or share <= 0:
            raise SpecError(
                f"spec key 'allocation.{arm}' = {share} is not a positive share",
                "shares are positive fractions that add up to 1; drop arms that got no units",
                field=f"allocation.{arm}",
            )
        shares[unicodedata.normalize("NFC", str(arm).strip())] = float(share)
    total = sum(shares.values())
    if abs(total - 1.0) > 0.01:
        hint = "write fractions, not percentages" if abs(total - 100) < 1 else "make the shares add up to 1"
        raise SpecError(f"spec 'allocation' shares add up to {total:g}, not 1", hint, field="allocation")
    if control not in shares:
        raise SpecError(
            f"spec key 'control' = {control!r} is not among the arms in 'allocation' ({', '.join(shares)})",
            "set control to the label of the control arm exactly as it appears in the data",
            field="control",
        )
    if len(shares) < 2:
        raise SpecError("spec 'allocation' has a single arm", "an experiment needs a control and at least one other arm",
                        field="allocation")
    return {arm: share / total for arm, share in shares.items()}


def _metrics(raw: dict[str, Any]) -> dict[str, MetricSpec]:
    table = raw["metrics"]
    if not isinstance(table, dict) or not table:
        raise SpecError("spec key 'metrics' must hold at least one metric table", _REQUIRED_HINTS["metrics"], field="metrics")
    metrics: dict[str, MetricSpec] = {}
    for name, entry in table.items():
        check_name(name, "spec metric name", partial(SpecError, field=f"metrics.{name}"), _NAME_HINT)
        where = f"metrics.{name}."
        if not isinstance(entry, dict):
            raise SpecError(
                f"spec key 'metrics.{name}' must be a table",
                f'write [metrics.{name}] on its own line followed by goal = "increase"',
                field=f"metrics.{name}",
            )
        _reject_unknown(entry, _METRIC_KEYS, where=where)
        goal = _string(entry, "goal", where=where)
        if goal not in GOALS:
            raise SpecError(f"spec key '{where}goal' = {goal!r} is not one of {GOALS}", 'use goal = "increase" or "decrease"',
                            field=f"{where}goal")
        role = _string(entry, "role", where=where, default="primary")
        if role not in ROLES:
            raise SpecError(f"spec key '{where}role' = {role!r} is not one of {ROLES}", 'use role = "primary", "secondary" or "guardrail"',
                            field=f"{where}role")
        max_harm = _limit(entry, "max_harm", where, role, "write e.g. max_harm = 0.02 for 2%",
                          "max_harm is a tolerated relative harm, 0 or more (0.02 = 2%)")
        max_harm_abs = _limit(entry, "max_harm_abs", where, role, "write e.g. max_harm_abs = 0.001 (in the metric's units)",
                              "max_harm_abs is a tolerated change in the metric's own units, 0 or more")
        if max_harm is not None and max_harm_abs is not None:
            raise SpecError(f"spec keys '{where}max_harm' and '{where}max_harm_abs' are both set",
                            "keep one: max_harm for a change relative to the control mean, max_harm_abs for one in the "
                            "metric's units (when the control mean can be 0)", field=f"{where}max_harm")
        if role == "guardrail" and max_harm is None and max_harm_abs is None:
            raise SpecError(f"guardrail metric '{name}' has no max_harm",
                            f"add {where}max_harm, the largest tolerated relative harm (e.g. 0.02 = 2%; 0 = none), or "
                            f"{where}max_harm_abs, a tolerated change in the metric's units", field=f"{where}max_harm")
        weight = entry.get("weight")
        if weight is not None and (isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight)):
            raise SpecError(f"spec key '{where}weight' must be a number, got {weight!r}", "write e.g. weight = 1.0",
                              field=f"{where}weight")
        metrics[name] = MetricSpec(
            name=name,
            column=_string(entry, "column", where=where, default=name),
            goal=goal,
            role=role,
            pre=_string(entry, "pre", where=where, default=None),
            max_harm=max_harm,
            max_harm_abs=max_harm_abs,
            weight=float(weight) if weight is not None else None,
            description=_string(entry, "description", where=where, default=""),
        )
    if not any(m.role == "primary" for m in metrics.values()):
        raise SpecError("spec has no primary metric", 'mark the metric you want to improve with role = "primary"',
                        field="metrics")
    return metrics


def _limit(entry: dict[str, Any], key: str, where: str, role: str, example: str, meaning: str) -> float | None:
    """A guardrail limit (``max_harm`` or ``max_harm_abs``): a finite number, 0 or more, on a guardrail metric only."""
    value = entry.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SpecError(f"spec key '{where}{key}' must be a number, got {value!r}", example, field=f"{where}{key}")
    if value < 0:
        raise SpecError(f"spec key '{where}{key}' = {value} is negative", meaning, field=f"{where}{key}")
    if role != "guardrail":
        raise SpecError(f"spec key '{where}{key}' is set on a {role} metric",
                        f'{key} only applies to role = "guardrail"; remove it or change the role', field=f"{where}{key}")
    return float(value)


_NAME_HINT = f"{HINT}; rename the column (or arm) in the data file and the spec"


def _check_names(spec: ExperimentSpec) -> None:
    """Names are data (:mod:`pex.names`): no line break, NUL or other control character in a column or arm name."""
    named = [("unit", spec.unit), ("arm", spec.arm), ("control", spec.control), ("owner", spec.owner), ("oncall", spec.oncall),
             ("propensity", spec.propensity), *(("features", f) for f in spec.features or ())]
    named += [("allocation", arm) for arm in spec.allocation or ()]
    for m in spec.metrics.values():
        named += [(f"metrics.{m.name}.column", m.column), (f"metrics.{m.name}.pre", m.pre)]
    for key, value in named:
        check_name(value, f"spec key '{key}'", partial(SpecError, field=key), _NAME_HINT)
    # free text may run over lines (a TOML multi-line string); the other control characters are refused there too
    texts = [("description", spec.description), *((f"metrics.{m.name}.description", m.description) for m in spec.metrics.values())]
    for key, text in texts:
        char = unsafe_character(text.replace("\n", " ").replace("\r", " ").replace("\t", " "))
        if char is not None:
            raise SpecError(f"spec key '{key}' holds {describe(char)}",
                            "descriptions are plain text: remove NUL and other control characters (line breaks and tabs are fine)",
                            field=key)


def _check_columns(spec: ExperimentSpec) -> None:
    if spec.unit == spec.arm:
        raise SpecError(f"spec keys 'unit' and 'arm' both name column {spec.unit!r}",
                        "the unit id and the assigned arm must be different columns", field="arm")
    columns = spec.metric_columns
    dup = sorted({c for c in columns if columns.count(c) > 1})
    if dup:
        name = next(m.name for m in reversed(spec.metrics.values()) if m.column == dup[0])
        raise SpecError(f"metric column {dup[0]!r} is used by more than one metric", "give each metric its own column",
                        field=f"metrics.{name}.column")
    for m in spec.metrics.values():
        for key, col in (("column", m.column), ("pre", m.pre)):
            if col in (spec.unit, spec.arm):
                raise SpecError(f"spec key 'metrics.{m.name}.{key}' = {col!r} is the unit or arm column",
                                "point it at the metric's own column", field=f"metrics.{m.name}.{key}")
        if m.pre and m.pre in columns:
            raise SpecError(f"spec key 'metrics.{m.name}.pre' = {m.pre!r} is itself a metric",
                            "pre must be a pre-period covariate measured before assignment", field=f"metrics.{m.name}.pre")
    if spec.features is not None:
        clash = [f for f in spec.features if f in spec.reserved_columns]
        if clash:
            raise SpecError(
                f"spec key 'features' includes {clash[0]!r}, which is the unit, arm, propensity or a metric column",
                "features are pre-treatment covariates only; remove it from features",
                field="features",
            )
    if spec.propensity and spec.propensity in (spec.unit, spec.arm, *columns, *spec.pre_columns):
        raise SpecError(f"spec key 'propensity' = {spec.propensity!r} is already another column's role",
                        "name the column holding assignment probabilities", field="propensity")


def spec_from_dict(d: dict[str, Any]) -> ExperimentSpec:
    """Rebuild a spec from :meth:`ExperimentSpec.to_dict` output (as stored)."""
    return ExperimentSpec(
        name=d["name"], data=Path(d["data"]), unit=d["unit"], arm=d["arm"], control=d["control"],
        metrics={name: MetricSpec(name=name, **m) for name, m in d["metrics"].items()},
        description=d.get("description", ""), owner=d.get("owner", ""),
        features=tuple(d["features"]) if d.get("features") is not None else None,
        propensity=d.get("propensity"), allocation=d.get("allocation"),
        max_age_days=d.get("max_age_days", MAX_AGE_DAYS), oncall=d.get("oncall"),
        monitor=MonitorThresholds(**d.get("monitor", {})),
    )
