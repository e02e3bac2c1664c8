"""Unit tests of pex.experiment.spec: the TOML experiment spec and its validation."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pex.errors import PexError, SpecError
from pex.experiment.spec import ExperimentSpec, MetricSpec, load_spec, parse_spec, spec_from_dict

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "experiments" / "notification_cadence.toml"


# -- the demo spec ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo() -> ExperimentSpec:
    return load_spec(DEMO, require_data=False)


def test_demo_spec_top_level(demo: ExperimentSpec) -> None:
    assert isinstance(demo, ExperimentSpec)
    assert demo.name == "notification_cadence"
    assert demo.owner == "growth-team"
    assert demo.description.startswith("How often to send the digest")
    assert demo.unit == "user_id"
    assert demo.arm == "arm"
    assert demo.control == "control"
    assert demo.propensity is None
    assert demo.source == DEMO


def test_demo_spec_data_is_resolved_relative_to_the_spec(demo: ExperimentSpec) -> None:
    assert isinstance(demo.data, Path)
    assert demo.data.is_absolute()
    assert demo.data == (ROOT / "experiments" / "notification_cadence.csv").resolve()


def test_demo_spec_features(demo: ExperimentSpec) -> None:
    assert isinstance(demo.features, tuple)
    assert demo.features == ("age", "tenure_days", "country", "platform", "sessions_pre",
                             "x0", "x1", "x2", "x3", "x4", "x5", "x6", "x7")


def test_demo_spec_allocation_is_normalised(demo: ExperimentSpec) -> None:
    assert demo.allocation is not None
    assert list(demo.allocation) == ["control", "daily", "weekly"]
    assert all(isinstance(v, float) for v in demo.allocation.values())
    assert math.isclose(sum(demo.allocation.values()), 1.0, abs_tol=1e-12)
    assert demo.allocation["control"] == pytest.approx(0.34)
    assert demo.allocation["daily"] == pytest.approx(0.33)
    assert demo.allocation["weekly"] == pytest.approx(0.33)


def test_demo_spec_metrics(demo: ExperimentSpec) -> None:
    assert list(demo.metrics) == ["sessions", "converted", "unsubscribes"]
    assert all(isinstance(m, MetricSpec) for m in demo.metrics.values())

    sessions = demo.metrics["sessions"]
    assert (sessions.name, sessions.column, sessions.goal, sessions.role) == ("sessions", "sessions", "increase", "primary")
    assert sessions.pre == "sessions_pre"
    assert sessions.max_harm is None and sessions.weight is None
    assert sessions.sign == 1

    converted = demo.metrics["converted"]
    assert (converted.column, converted.goal, converted.role, converted.pre) == ("converted", "increase", "secondary", None)

    unsub = demo.metrics["unsubscribes"]
    assert (unsub.column, unsub.goal, unsub.role) == ("unsubscribes", "decrease", "guardrail")
    assert isinstance(unsub.max_harm, float) and unsub.max_harm == 0.05
    assert unsub.sign == -1

    assert demo.metric_columns == ["sessions", "converted", "unsubscribes"]
    assert demo.pre_columns == ["sessions_pre"]
    assert demo.reserved_columns == {"user_id", "arm", "sessions", "converted", "unsubscribes"}


def test_demo_spec_round_trips_through_to_dict(demo: ExperimentSpec) -> None:
    assert spec_from_dict(demo.to_dict()) == demo


def test_require_data_true_rejects_a_missing_data_file(tmp_path: Path) -> None:
    (tmp_path / "e.toml").write_text(DEMO.read_text(encoding="utf-8"), encoding="utf-8")
    assert load_spec(tmp_path / "e.toml", require_data=False).data == tmp_path.resolve() / "notification_cadence.csv"
    with pytest.raises(SpecError, match=r"data file not found: .*notification_cadence\.csv \(spec key 'data'") as info:
        load_spec(tmp_path / "e.toml")
    assert info.value.hint


# -- defaults --------------------------------------------------------------------------


def minimal() -> dict[str, Any]:
    """The smallest valid spec mapping."""
    return {
        "name": "exp",
        "data": "exp.csv",
        "unit": "user_id",
        "arm": "arm",
        "control": "control",
        "metrics": {"sessions": {"goal": "increase"}},
    }


def parse(raw: dict[str, Any], base_dir: Path = Path("/data/specs")) -> ExperimentSpec:
    return parse_spec(raw, base_dir=base_dir, require_data=False)


def test_defaults_of_a_minimal_spec() -> None:
    spec = parse(minimal())
    assert spec.features is None
    assert spec.propensity is None
    assert spec.allocation is None
    assert spec.description == "" and spec.owner == ""
    assert spec.source is None
    assert spec.data == Path("/data/specs/exp.csv")
    m = spec.metrics["sessions"]
    assert m == MetricSpec(name="sessions", column="sessions", goal="increase", role="primary")
    assert m.pre is None and m.max_harm is None and m.weight is None and m.description == ""


def test_metric_column_can_be_renamed() -> None:
    raw = minimal()
    raw["metrics"]["sessions"]["column"] = "n_sessions_28d"
    spec = parse(raw)
    assert spec.metrics["sessions"].column == "n_sessions_28d"
    assert spec.metric_columns == ["n_sessions_28d"]


def test_numbers_are_floats() -> None:
    raw = minimal()
    raw["metrics"]["sessions"]["weight"] = 2
    raw["metrics"]["unsub"] = {"goal": "decrease", "role": "guardrail", "max_harm": 0}
    spec = parse(raw)
    assert spec.metrics["sessions"].weight == 2.0 and isinstance(spec.metrics["sessions"].weight, float)
    assert spec.metrics["unsub"].max_harm == 0.0 and isinstance(spec.metrics["unsub"].max_harm, float)


def test_an_absolute_limit_for_a_guardrail() -> None:
    raw = minimal()
    raw["metrics"]["refunds"] = {"goal": "decrease", "role": "guardrail", "max_harm_abs": 0}
    spec = parse(raw)
    refunds = spec.metrics["refunds"]
    assert refunds.max_harm_abs == 0.0 and isinstance(refunds.max_harm_abs, float) and refunds.max_harm is None
    assert spec_from_dict(spec.to_dict()) == spec
    assert spec.to_dict()["metrics"]["refunds"]["max_harm_abs"] == 0.0
    # a spec without it keeps the canonical form (and so the hash) it had before the key existed
    assert "max_harm_abs" not in parse(minimal()).to_dict()["metrics"]["sessions"]


@pytest.mark.parametrize(
    ("shares", "expected"),
    [
        pytest.param({"control": 0.5, "treatment": 0.5}, {"control": 0.5, "treatment": 0.5}, id="exact"),
        pytest.param({"control": 0.5, "treatment": 0.505}, {"control": 0.5 / 1.005, "treatment": 0.505 / 1.005}, id="rounding-slack"),
        pytest.param({"control": 0.34, "a": 0.33, "b": 0.33}, {"control": 0.34, "a": 0.33, "b": 0.33}, id="three-arms"),
    ],
)
def test_allocation_is_normalised_to_sum_one(shares: dict[str, float], expected: dict[str, float]) -> None:
    raw = minimal()
    raw["allocation"] = shares
    spec = parse(raw)
    assert spec.allocation == pytest.approx(expected)
    assert math.isclose(sum(spec.allocation.values()), 1.0, abs_tol=1e-12)


# -- bad spec mappings -----------------------------------------------------------------


def mutate(change: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
    raw = copy.deepcopy(minimal())
    change(raw)
    return raw


def guardrail(**entry: Any) -> Callable[[dict[str, Any]], None]:
    return lambda r: r["metrics"].__setitem__("unsub", {"goal": "decrease", "role": "guardrail", **entry})


BAD = [
    pytest.param(lambda r: r.update(contrl="control"), r"unknown spec key 'contrl'", id="typo-top-key"),
    pytest.param(lambda r: r["metrics"]["sessions"].update(gaol="increase"),
                 r"unknown spec key 'metrics\.sessions\.gaol'", id="typo-metric-key"),
    pytest.param(lambda r: r.pop("unit"), r"missing required key 'unit'", id="missing-unit"),
    pytest.param(lambda r: r.pop("metrics"), r"missing required key 'metrics'", id="missing-metrics"),
    pytest.param(lambda r: r["metrics"]["sessions"].pop("goal"), r"missing required key 'metrics\.sessions\.goal'", id="missing-goal"),
    pytest.param(lambda r: r.update(name="My Exp"), r"spec key 'name' = 'My Exp'", id="invalid-name"),
    pytest.param(lambda r: r.update(unit=7), r"spec key 'unit' must be a non-empty string", id="unit-not-string"),
    pytest.param(lambda r: r.update(arm="  "), r"spec key 'arm' must be a non-empty string", id="arm-blank"),
    pytest.param(lambda r: r.update(data="exp.xlsx"), r"spec key 'data' = 'exp\.xlsx' is neither CSV nor Parquet", id="data-suffix"),
    pytest.param(lambda r: r.update(features="age"), r"spec key 'features' must be a list", id="features-string"),
    pytest.param(lambda r: r.update(features=["age", 3]), r"spec key 'features' must be a list", id="features-non-string-item"),
    pytest.param(lambda r: r.update(features=["age", "age"]),
                 r"spec key 'features' lists \['age'\] more than once", id="features-duplicate"),
    pytest.param(lambda r: r.update(features=["age", "arm"]), r"spec key 'features' includes 'arm'", id="features-include-arm"),
    pytest.param(lambda r: r.update(features=["age", "sessions"]),
                 r"spec key 'features' includes 'sessions'", id="features-include-metric"),
    pytest.param(lambda r: r.update(allocation=[0.5, 0.5]), r"spec key 'allocation' must be a table", id="allocation-not-table"),
    pytest.param(lambda r: r.update(allocation={"control": "half", "t": 0.5}),
                 r"spec key 'allocation\.control' must be a number", id="allocation-share-string"),
    pytest.param(lambda r: r.update(allocation={"control": 1.0, "t": 0.0}),
                 r"spec key 'allocation\.t' = 0\.0 is not a positive share", id="allocation-zero-share"),
    pytest.param(lambda r: r.update(allocation={"control": 0.6, "t": 0.6}),
                 r"spec 'allocation' shares add up to 1\.2, not 1", id="allocation-sum"),
    pytest.param(lambda r: r.update(allocation={"control": 50, "t": 50}),
                 r"spec 'allocation' shares add up to 100", id="allocation-percent"),
    pytest.param(lambda r: r.update(allocation={"ctrl": 0.5, "t": 0.5}),
                 r"spec key 'control' = 'control' is not among the arms in 'allocation'", id="control-not-in-allocation"),
    pytest.param(lambda r: r.update(allocation={"control": 1.0}), r"spec 'allocation' has a single arm", id="allocation-single-arm"),
    pytest.param(lambda r: r.update(metrics={}), r"spec key 'metrics' must hold at least one metric", id="metrics-empty"),
    pytest.param(lambda r: r["metrics"].update(sessions="increase"),
                 r"spec key 'metrics\.sessions' must be a table", id="metric-not-table"),
    pytest.param(lambda r: r["metrics"]["sessions"].update(goal="maximize"),
                 r"spec key 'metrics\.sessions\.goal' = 'maximize'", id="unknown-goal"),
    pytest.param(lambda r: r["metrics"]["sessions"].update(role="main"), r"spec key 'metrics\.sessions\.role' = 'main'", id="unknown-role"),
    pytest.param(guardrail(), r"guardrail metric 'unsub' has no max_harm", id="guardrail-without-max-harm"),
    pytest.param(guardrail(max_harm=-0.1), r"spec key 'metrics\.unsub\.max_harm' = -0\.1 is negative", id="negative-max-harm"),
    pytest.param(guardrail(max_harm="2%"), r"spec key 'metrics\.unsub\.max_harm' must be a number", id="max-harm-string"),
    pytest.param(guardrail(max_harm=True), r"spec key 'metrics\.unsub\.max_harm' must be a number", id="max-harm-bool"),
    pytest.param(guardrail(max_harm=float("inf")), r"spec key 'metrics\.unsub\.max_harm' must be a number", id="max-harm-inf"),
    pytest.param(lambda r: r["metrics"]["sessions"].update(max_harm=0.1),
                 r"spec key 'metrics\.sessions\.max_harm' is set on a primary metric", id="max-harm-on-primary"),
    pytest.param(guardrail(max_harm=0.05, max_harm_abs=0.001),
                 r"spec keys 'metrics\.unsub\.max_harm' and 'metrics\.unsub\.max_harm_abs' are both set", id="both-limits"),
    pytest.param(guardrail(max_harm_abs=-0.001), r"spec key 'metrics\.unsub\.max_harm_abs' = -0\.001 is negative",
                 id="negative-max-harm-abs"),
    pytest.param(guardrail(max_harm_abs="0.1%"), r"spec key 'metrics\.unsub\.max_harm_abs' must be a number",
                 id="max-harm-abs-string"),
    pytest.param(guardrail(max_harm_abs=float("nan")), r"spec key 'metrics\.unsub\.max_harm_abs' must be a number",
                 id="max-harm-abs-nan"),
    pytest.param(lambda r: r["metrics"]["sessions"].update(max_harm_abs=0.1),
                 r"spec key 'metrics\.sessions\.max_harm_abs' is set on a primary metric", id="max-harm-abs-on-primary"),
    pytest.param(lambda r: r["metrics"]["sessions"].update(weight="high"),
                 r"spec key 'metrics\.sessions\.weight' must be a number", id="weight-string"),
    pytest.param(lambda r: r["metrics"]["sessions"].update(role="secondary"), r"spec has no primary metric", id="no-primary-metric"),
    pytest.param(lambda r: r.update(unit="arm"), r"spec keys 'unit' and 'arm' both name column 'arm'", id="unit-equals-arm"),
    pytest.param(lambda r: r["metrics"].update(more={"goal": "increase", "column": "sessions"}),
                 r"metric column 'sessions' is used by more than one metric", id="metric-column-shared"),
    pytest.param(lambda r: r["metrics"]["sessions"].update(column="user_id"),
                 r"spec key 'metrics\.sessions\.column' = 'user_id' is the unit or arm column", id="metric-is-unit"),
    pytest.param(lambda r: r["metrics"]["sessions"].update(pre="sessions"),
                 r"spec key 'metrics\.sessions\.pre' = 'sessions' is itself a metric", id="pre-is-metric"),
    pytest.param(lambda r: r.update(propensity="sessions"), r"spec key 'propensity' = 'sessions'", id="propensity-is-metric"),
    pytest.param(lambda r: (r.update(propensity="sessions_pre"), r["metrics"]["sessions"].update(pre="sessions_pre")),
                 r"spec key 'propensity' = 'sessions_pre'", id="propensity-is-pre-period"),
]


@pytest.mark.parametrize(("change", "message"), BAD)
def test_bad_spec_raises_spec_error_naming_the_key(change, message: str) -> None:
    with pytest.raises(SpecError, match=message) as info:
        parse(mutate(change))
    err = info.value
    assert isinstance(err, PexError)
    assert err.message == str(err)
    assert "\n" not in err.message
    assert isinstance(err.hint, str) and err.hint.strip()


def test_unknown_key_hint_suggests_the_closest_key() -> None:
    with pytest.raises(SpecError) as info:
        parse(mutate(lambda r: r.update(contrl="control")))
    assert info.value.hint == "did you mean 'control'?"


# -- load_spec file errors -------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param(None, r"spec file not found", id="missing-file"),
        pytest.param(b'name = "exp"\nunit = user_id\n', r"is not valid TOML", id="invalid-toml"),
        pytest.param('owner = "Équipe"\n'.encode("latin-1"), r"is not UTF-8 text", id="not-utf8"),
    ],
)
def test_load_spec_file_errors(tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "exp.toml"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(SpecError, match=message) as info:
        load_spec(path)
    assert info.value.hint
