"""Names are data, never code (issue 24): control characters are refused in spec, data and policy names, and the SQL
export keeps any name inside a quoted literal or an escaped comment, so hostile names run as one statement."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from pex.errors import DataError, SpecError
from pex.experiment.data import validate
from pex.experiment.simulate import simulate
from pex.experiment.spec import parse_spec
from pex.names import printable, unsafe_character
from pex.policy.base import Policy, PolicyError
from pex.policy.sql import policy_sql
from pex.services.exports import export_policy

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "experiments" / "notification_cadence.toml"
EXAMPLE = ROOT / "policies" / "notification_cadence-tree-example.json"
REFUSED = {"\n": "line feed (U+000A)", "\r": "carriage return (U+000D)", "\x00": "NUL (U+0000)",
           "\t": "tab (U+0009)", "\x85": "next line (NEL) (U+0085)", "\u2028": "LINE SEPARATOR (U+2028)",
           "\u202e": "RIGHT-TO-LEFT OVERRIDE (U+202E)", "\ud800": "lone surrogate (U+D800"}


def _no_workspace():
    raise AssertionError("a tree policy from a file needs no workspace")


# -- the rule ----------------------------------------------------------------------------


@pytest.mark.parametrize("char", list(REFUSED))
def test_refused_characters_are_found_and_escaped(char):
    assert unsafe_character(f"a{char}b") == char
    shown = printable(f"x{char}--y")
    assert unsafe_character(shown) is None and shown.startswith("x\\") and shown.endswith("--y")


@pytest.mark.parametrize("name", ["country", "état", "it's; DROP TABLE t; --", "👩\u200d💻", "a b", 'q"uote', "/*x*/"])
def test_quotes_semicolons_dashes_and_any_script_are_allowed(name):
    assert unsafe_character(name) is None
    assert printable(name) == name


# -- the spec ----------------------------------------------------------------------------


def _demo_raw() -> dict:
    return tomllib.loads(DEMO.read_text(encoding="utf-8"))


def _features(raw: dict, bad: str) -> None:
    raw["features"] = ["age", bad]


def _unit(raw: dict, bad: str) -> None:
    raw["unit"] = bad


def _control(raw: dict, bad: str) -> None:
    raw["allocation"][bad] = raw["allocation"].pop("control")
    raw["control"] = bad


def _metric_name(raw: dict, bad: str) -> None:
    raw["metrics"][bad] = raw["metrics"].pop("sessions")


def _metric_column(raw: dict, bad: str) -> None:
    raw["metrics"]["sessions"]["column"] = bad


def _propensity(raw: dict, bad: str) -> None:
    raw["propensity"] = bad


@pytest.mark.parametrize(("edit", "key"), [(_features, "'features'"), (_unit, "'unit'"), (_control, "'control'"),
                                           (_metric_name, "metric name"), (_metric_column, "'metrics.sessions.column'"),
                                           (_propensity, "'propensity'")])
@pytest.mark.parametrize("char", ["\n", "\r", "\x00"])
def test_a_spec_refuses_control_characters_in_names(edit, key, char):
    raw = _demo_raw()
    edit(raw, f"x{char}y")
    with pytest.raises(SpecError) as err:
        parse_spec(raw, base_dir=DEMO.parent, require_data=False)
    assert key in err.value.message and REFUSED[char] in err.value.message
    assert "control characters" in err.value.hint


def test_a_spec_description_may_run_over_lines_but_holds_no_nul():
    raw = _demo_raw()
    raw["description"] = "line one\nline two\ttabbed"
    assert parse_spec(raw, base_dir=DEMO.parent, require_data=False).description.count("\n") == 1
    raw["description"] = "nul\x00here"
    with pytest.raises(SpecError, match=r"'description' holds a NUL \(U\+0000\)"):
        parse_spec(raw, base_dir=DEMO.parent, require_data=False)


# -- the data ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small():
    sim = simulate(400, seed=2)
    spec = parse_spec(_demo_raw() | {"data": "x.csv"}, base_dir=DEMO.parent, require_data=False)
    return spec, sim.data


def test_ingest_refuses_a_category_label_with_a_line_break(small):
    spec, frame = small
    frame = frame.copy()
    frame["country"] = frame["country"].astype(object)
    frame.loc[7, "country"] = "US\nDROP TABLE t;"
    with pytest.raises(DataError) as err:
        validate(frame, spec, source="x.csv")
    assert "feature 'country' in x.csv has a category label that holds a line feed (U+000A) (row 8)" in err.value.message
    assert "clean the labels" in err.value.hint


def test_ingest_refuses_an_arm_label_and_a_feature_column_with_control_characters(small):
    _spec, frame = small
    bad_arm = frame.copy()
    bad_arm.loc[bad_arm["arm"] == "weekly", "arm"] = "week\rly"
    observed = parse_spec({k: v for k, v in _demo_raw().items() if k != "allocation"} | {"data": "x.csv"},
                          base_dir=DEMO.parent, require_data=False)  # arms as found in the data
    with pytest.raises(DataError, match=r"arm label in column 'arm' of data holds a carriage return"):
        validate(bad_arm, observed)
    everything = parse_spec({k: v for k, v in _demo_raw().items() if k != "features"} | {"data": "x.csv"},
                            base_dir=DEMO.parent, require_data=False)  # features: every other column
    with pytest.raises(DataError, match=r"feature column name in data holds a NUL"):
        validate(frame.assign(**{"note\x00": 1.0}), everything)
    assert validate(frame.assign(**{"it's; --": "a"}), everything).features["it's; --"] == "categorical"


# -- policy documents ---------------------------------------------------------------------


def _example() -> dict:
    return json.loads(EXAMPLE.read_text(encoding="utf-8"))


def _categories(node: dict) -> dict:
    """The first category split of a tree."""
    while "arm" not in node:
        if node["op"] == "in":
            return node
        node = node["left"] if "feature" in node["left"] else node["right"]
    raise AssertionError("the example tree has a category split")


@pytest.mark.parametrize(("where", "message"), [
    (lambda d: d.update(name="p\n; DROP TABLE t"), "policy name holds a line feed"),
    (lambda d: d.update(experiment="e\x00"), "policy experiment holds a NUL"),
    (lambda d: (d.update(arms=[*d["arms"][:-1], "week\rly"]), d.update(tree={"arm": d["default_arm"]})),
     "policy arm label holds a carriage return"),
    (lambda d: d["tree"].update(feature="tenure\ndays"), "policy tree node tree: feature holds a line feed"),
    (lambda d: _categories(d["tree"])["value"].append("ios\u2028"), "category label holds a LINE SEPARATOR"),
])
def test_a_policy_document_refuses_control_characters_in_names(where, message):
    doc = _example()
    where(doc)
    with pytest.raises(PolicyError) as err:
        Policy.from_document(doc)
    assert message in err.value.message and err.value.status == 422
    assert "control characters" in err.value.hint


def test_a_routing_policy_refuses_a_unit_column_with_a_line_break():
    route = _example()
    doc = {k: route[k] for k in ("format", "name", "arms", "default_arm", "exploration")} | {
        "kind": "routing", "routing": {"key": "k", "unit": "user\nid", "routes": [{"start": 0, "share": 1, "policy": route}]}}
    with pytest.raises(PolicyError, match=r"routing.unit holds a line feed"):
        Policy.from_document(doc)
    doc["routing"]["unit"] = "user_id"
    assert Policy.from_document(doc).routing["unit"] == "user_id"


# -- the SQL export of hostile names (the Show item) --------------------------------------

# written raw into the `--` header (pex before issue 24), this name ends the comment and smuggles in a DROP TABLE
HOSTILE_NAME = "evil\n1 AS arm FROM t; DROP TABLE t; SELECT\n-- "
HOSTILE_FEATURES = ['tenure"; DROP TABLE t; --\nx', "plat'form;\r\n--"]
HOSTILE_LABELS = ["ios'; DROP TABLE t; --", "and\nroid;", "--", 'we"b']
ARMS = ["control", "daily';DROP TABLE t;--", "weekly"]


def _hostile_document(name: str = HOSTILE_NAME, features: list[str] = HOSTILE_FEATURES,
                      labels: list[str] = HOSTILE_LABELS) -> dict:
    """A tree whose policy name, features and labels hold quotes, semicolons, line breaks and ``--`` (by default): as a
    document stored before pex refused control characters in names may."""
    left, right = features
    return {"format": "pex.policy/1", "name": name, "version": 3, "experiment": "exp", "kind": "tree",
            "arms": ARMS, "default_arm": "control", "exploration": 0.0,
            "tree": {"feature": left, "op": "<=", "value": 30.5, "missing": "left",
                     "left": {"feature": right, "op": "in", "value": labels[:2],
                              "left": {"arm": ARMS[1]}, "right": {"arm": "weekly"}},
                     "right": {"feature": right, "op": "in", "value": labels[2:], "missing": "left",
                               "left": {"arm": "weekly"}, "right": {"arm": "control"}}}}


@pytest.fixture
def unchecked(monkeypatch):
    """Load documents as pex did before it checked names (old stored documents may hold any name)."""
    def accept(*_args, **_kwargs):
        return None

    monkeypatch.setattr("pex.policy.base.check_name", accept)
    monkeypatch.setattr("pex.policy.tree.check_name", accept)


def _frame(features: list[str] = HOSTILE_FEATURES, labels: list[str] = HOSTILE_LABELS, n: int = 400) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    tenure = rng.integers(0, 60, n).astype(float)
    tenure[rng.random(n) < 0.1] = np.nan
    seen = np.asarray([*labels, "unseen", None], dtype=object)[rng.integers(0, len(labels) + 2, n)]
    return pd.DataFrame({"user_id": [f"u{i}" for i in range(n)], features[0]: tenure, features[1]: seen})


def _run(statement: str, frame: pd.DataFrame) -> tuple[np.ndarray, bool]:
    """Run ``statement`` on table ``t`` (a real table, so a smuggled DROP TABLE could drop it); (arms, t still exists)."""
    with duckdb.connect() as db:
        db.register("source", frame)
        db.execute("CREATE TABLE t AS SELECT * FROM source")
        db.unregister("source")
        arms = db.execute(statement).df()["arm"].to_numpy(dtype=object)
        exists = db.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 't'").fetchone()[0] == 1
    return arms, exists


def test_the_sql_export_of_hostile_names_is_one_statement_giving_pex_arms(tmp_path, unchecked):
    path = tmp_path / "hostile.json"
    path.write_text(json.dumps(_hostile_document()), encoding="utf-8")
    text, policy = export_policy(_no_workspace, str(path), "sql")
    assert policy.name == HOSTILE_NAME  # loaded as stored, not cleaned
    header = text[: text.index("CASE")]
    assert all(line.startswith("-- ") for line in header.splitlines())  # every name stayed inside its comment line
    assert "evil\\n1 AS arm FROM t; DROP TABLE t; SELECT\\n-- " in header

    statement = f"SELECT\n{text} AS arm FROM t"
    assert len(duckdb.extract_statements(statement)) == 1
    frame = _frame()
    arms, table_survived = _run(statement, frame)
    assert table_survived
    decided, propensity = policy.decide(frame, frame["user_id"])
    np.testing.assert_array_equal(arms, decided)
    assert (propensity == 1.0).all()  # exploration 0: pex's decisions are its greedy arms
    assert set(arms) == set(ARMS)  # every leaf was reached, through every hostile label and missing value

    # the same header with the name written raw (pex before issue 24) is three statements, a DROP TABLE among them
    raw = text.replace(printable(HOSTILE_NAME), HOSTILE_NAME, 1)
    kinds = [s.type for s in duckdb.extract_statements(f"SELECT\n{raw} AS arm FROM t")]
    assert kinds == [duckdb.StatementType.SELECT, duckdb.StatementType.DROP, duckdb.StatementType.SELECT]


def test_hostile_names_that_pass_validation_export_and_run():
    features = ['tenure"; DROP TABLE t; --', "plat'form; --"]
    labels = ["ios'; DROP TABLE t; --", "--", 'we"b', "it's"]
    # quotes, semicolons and dashes are legal in names
    policy = Policy.from_document(_hostile_document("p'; DROP TABLE t; --", features, labels))
    frame = _frame(features, labels)
    arms, table_survived = _run(f"SELECT {policy_sql(policy)} AS arm FROM t", frame)
    assert table_survived
    np.testing.assert_array_equal(arms, policy.decide(frame, frame["user_id"])[0])
    assert set(arms) == set(ARMS)


def test_nul_in_a_stored_label_is_refused_by_the_sql_export_never_written_raw(tmp_path, unchecked):
    doc = _hostile_document()
    doc["tree"]["left"]["value"] = ["ios\x00"]
    path = tmp_path / "nul.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    with pytest.raises(PolicyError, match=r"a label holds a NUL \(U\+0000\), which SQL text cannot hold"):
        export_policy(_no_workspace, str(path), "sql")
