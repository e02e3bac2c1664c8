"""Outcomes reported back: one validation rule (pex.services.outcomes) for `pex outcomes` and the HTTP route."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from served import NAME

from pex.errors import DataError, NotFoundError, PexError
from pex.services.outcomes import MAX_RECORDS, record_outcomes
from pex.store.workspace import Workspace


@pytest.fixture
def ws(ws_home):
    with Workspace(ws_home, create=False) as workspace:
        yield workspace


def _count(home) -> int:
    with Workspace(home, create=False) as ws:
        return len(ws.read_outcomes(NAME))


GOOD = {"unit": "u1", "metric": "sessions", "value": 3.5}


def test_records_as_parsed_from_json_are_stored(ws):
    n = record_outcomes(ws, NAME, [GOOD, {"unit": 42, "metric": "converted", "value": 1},
                                   {"unit": "u1", "metric": "unsubscribes", "value": 0.0}])
    assert n == 3
    stored = ws.read_outcomes(NAME)
    assert stored[["unit", "metric", "value"]].values.tolist() == [["u1", "sessions", 3.5], ["42", "converted", 1.0],
                                                                   ["u1", "unsubscribes", 0.0]]
    assert stored["recorded_at"].notna().all()


@pytest.mark.parametrize(("bad", "message", "hint"), [
    ({"unit": "u2", "metric": "revenue", "value": 1}, r"record 1 has metric 'revenue', which is not a metric of experiment 'exp'",
     "sessions, converted, unsubscribes"),
    ({"metric": "sessions", "value": 1}, r"record 1 has no 'unit'", "looks like"),
    ({"unit": "", "metric": "sessions", "value": 1}, r"record 1 has unit '': a unit is a non-empty string or an integer", "id"),
    ({"unit": "   ", "metric": "sessions", "value": 1}, r"record 1 has unit '   '", "id"),
    ({"unit": None, "metric": "sessions", "value": 1}, r"record 1 has unit None", "id"),
    ({"unit": 1.5, "metric": "sessions", "value": 1}, r"record 1 has unit 1.5", "id"),
    ({"unit": True, "metric": "sessions", "value": 1}, r"record 1 has unit True", "id"),
    ({"unit": ["u2"], "metric": "sessions", "value": 1}, r"record 1 has unit \['u2'\]", "id"),
    ({"unit": "u" * 257, "metric": "sessions", "value": 1}, r"record 1 has a unit id that has 257 characters \(at most 256\)",
     "id"),
    ({"unit": "u\ud800", "metric": "sessions", "value": 1}, r"record 1 has a unit id that holds a lone "
     r"surrogate \(U\+D800, not UTF-8 text\) at character 1", "id"),
    ({"unit": "u\x00", "metric": "sessions", "value": 1}, r"record 1 has a unit id that holds a NUL \(U\+0000\) at character 1", "id"),
    ({"unit": "u2", "metric": "\udfff", "value": 1}, r"record 1 has metric '\\udfff', which is not a metric", "sessions"),
    ({"unit": "u2", "metric": 3, "value": 1}, r"record 1 has metric 3, which is not a metric", "sessions"),
    ({"unit": "u2", "metric": "converted", "value": -5}, r"record 1 has value -5 for metric 'converted', which is binary: "
     r"0 or 1", "send 1 where the unit converted"),
    ({"unit": "u2", "metric": "unsubscribes", "value": 0.5}, r"record 1 has value 0.5 for metric 'unsubscribes', which is "
     r"binary", "0 where it did not"),
    ({"unit": "u2", "metric": "sessions", "value": [[[1]]] * 100}, r"record 1 has value \[\[\[1\]\], .{72}\.\.\.: a value",
     "number"),  # the message quotes the start of a value, never the whole of it
    ({"unit": "u2", "metric": "sessions", "value": "3"}, r"record 1 has value '3': a value is a finite number", "number"),
    ({"unit": "u2", "metric": "sessions", "value": None}, r"record 1 has value None", "number"),
    ({"unit": "u2", "metric": "sessions", "value": True}, r"record 1 has value True", "number"),
    ({"unit": "u2", "metric": "sessions", "value": math.nan}, r"record 1 has value nan", "number"),
    ({"unit": "u2", "metric": "sessions", "value": math.inf}, r"record 1 has value inf", "number"),
    ({"unit": "u2", "metric": "sessions"}, r"record 1 has no 'value'", "looks like"),
    ({"unit": "u2", "metric": "sessions", "value": 1, "vaule": 2}, r"record 1 has the unknown key 'vaule'", "exactly the keys"),
    (["u2", "sessions", 1], r"record 1 is list, not an object", "looks like"),
])
def test_a_bad_record_is_named_by_index_and_nothing_is_stored(ws, bad, message, hint):
    with pytest.raises(DataError, match=message) as caught:
        record_outcomes(ws, NAME, [GOOD, bad, GOOD])
    assert hint in caught.value.hint
    assert len(ws.read_outcomes(NAME)) == 0  # the good records around it were not stored either


@pytest.mark.parametrize(("records", "message"), [
    ([], "records must be a non-empty list of outcomes, got an empty list"),
    ({"unit": "u1", "metric": "sessions", "value": 1}, "records must be a non-empty list of outcomes, got dict"),
    ("u1,sessions,1", "got str"),
    (None, "got NoneType"),
])
def test_records_must_be_a_non_empty_list(ws, records, message):
    with pytest.raises(DataError, match=message):
        record_outcomes(ws, NAME, records)
    assert len(ws.read_outcomes(NAME)) == 0


def test_at_most_100000_records_per_call(ws):
    with pytest.raises(DataError, match=r"100,001 records in one call; at most 100,000 are accepted") as caught:
        record_outcomes(ws, NAME, [GOOD] * (MAX_RECORDS + 1))
    assert "in parts" in caught.value.hint
    assert len(ws.read_outcomes(NAME)) == 0
    assert record_outcomes(ws, NAME, [GOOD] * 3, max_records=None) == 3  # a file is not bound


def test_binary_metrics_take_0_and_1_and_other_metrics_any_finite_number(ws):
    assert ws.dataset_metric_types(ws.dataset_version(NAME).id) == {
        "sessions": "continuous", "converted": "binary", "unsubscribes": "binary"}
    records = [{"unit": "u1", "metric": "converted", "value": v} for v in (0, 1, 0.0, 1.0)]
    records += [{"unit": "u1", "metric": "sessions", "value": v} for v in (-5, 0.25, 1e9)]
    assert record_outcomes(ws, NAME, records) == 7


@pytest.mark.parametrize(("experiment", "error", "message"), [
    ("nope", NotFoundError, "no experiment named 'nope'"),
    (None, PexError, "experiment must be a name"),
    (7, PexError, "experiment must be a name"),
    ("e\ud800", DataError, r"the experiment name holds a lone surrogate \(U\+D800, not UTF-8 text\) at character 1"),
    ("exp\n", DataError, r"the experiment name holds a line feed \(U\+000A\) at character 3"),
    ("e" * 65, DataError, r"the experiment name has 65 characters \(at most 64\)"),
])
def test_the_experiment_must_exist(ws, experiment, error, message):
    with pytest.raises(error, match=message) as caught:
        record_outcomes(ws, experiment, [GOOD])
    assert caught.value.hint
    assert len(ws.read_outcomes(NAME)) == 0


def test_pex_outcomes_reads_a_long_file(run, ws_home, tmp_path):
    path = tmp_path / "long.csv"
    pd.DataFrame({"unit": ["007", "u2", "u2"], "metric": ["sessions", "sessions", "converted"],
                  "value": [1.5, 2, 0]}).to_csv(path, index=False)
    r = run("outcomes", NAME, path)
    assert r.code == 0, r
    assert r.out.strip() == f"recorded 3 outcomes for {NAME}"
    with Workspace(ws_home, create=False) as ws:
        assert ws.read_outcomes(NAME)[["unit", "metric", "value"]].values.tolist() == [
            ["007", "sessions", 1.5], ["u2", "sessions", 2.0], ["u2", "converted", 0.0]]  # "007" stays text


def test_pex_outcomes_reads_a_wide_parquet_file_and_skips_empty_cells(run, ws_home, tmp_path):
    path = tmp_path / "wide.parquet"
    pd.DataFrame({"user_id": ["u1", "u2", "u3"], "sessions": [1.0, None, 3.0], "converted": [1, 0, None],
                  "age": [30, 40, 50]}).to_parquet(path, index=False)  # age: not a metric, ignored
    r = run("outcomes", NAME, path)
    assert r.code == 0, r
    assert r.out.splitlines()[0] == f"recorded 4 outcomes for {NAME}"
    assert "2 empty cells are no outcome" in r.out
    with Workspace(ws_home, create=False) as ws:
        got = ws.read_outcomes(NAME)
    assert sorted(zip(got["unit"], got["metric"], got["value"], strict=True)) == [
        ("u1", "converted", 1.0), ("u1", "sessions", 1.0), ("u2", "converted", 0.0), ("u3", "sessions", 3.0)]


@pytest.mark.parametrize(("frame", "message"), [
    (pd.DataFrame({"unit": ["u1", "u2"], "metric": ["sessions", "revenue"], "value": [1, 2]}),
     "row 2 of bad.csv has metric 'revenue', which is not a metric of experiment 'exp'"),
    (pd.DataFrame({"unit": ["u1", "u2"], "metric": ["sessions", "sessions"], "value": [1, "lots"]}),
     "row 2 of bad.csv has value 'lots': a value is a finite number"),
    (pd.DataFrame({"unit": ["u1", "u2"], "metric": ["sessions", "sessions"], "value": [1, None]}),
     "row 2 of bad.csv has value nan"),
    (pd.DataFrame({"unit": ["u1", None], "metric": ["sessions", "sessions"], "value": [1, 2]}),
     "row 2 of bad.csv has unit None"),
    (pd.DataFrame({"user_id": ["u1", "u2"], "sessions": [1, "x"]}), "row 2 of bad.csv has sessions 'x'"),
    (pd.DataFrame({"id": ["u1"], "metric": ["sessions"], "value": [1]}), "bad.csv has no unit column"),
    (pd.DataFrame({"user_id": ["u1"], "revenue": [1]}), "neither the columns metric and value nor a column named as a metric"),
    (pd.DataFrame({"user_id": ["u1"], "sessions": [None]}), "every cell of sessions is empty"),
    (pd.DataFrame({"unit": ["u1"], "metric": ["sessions"], "value": [True]}), "column value of bad.csv holds true/false"),
])
def test_pex_outcomes_refuses_a_bad_file_and_records_nothing(run, ws_home, tmp_path, frame, message):
    path = tmp_path / "bad.csv"
    frame.to_csv(path, index=False)
    r = run("outcomes", NAME, path)
    assert r.code == 2, r
    assert r.err.startswith("error: ") and message in r.err.splitlines()[0]
    assert r.err.splitlines()[1].startswith("hint: ")
    assert _count(ws_home) == 0


def test_pex_outcomes_refuses_an_unknown_experiment(run, ws_home, tmp_path):
    path = tmp_path / "long.csv"
    pd.DataFrame({"unit": ["u1"], "metric": ["sessions"], "value": [1]}).to_csv(path, index=False)
    r = run("outcomes", "nope", path)
    assert r.code == 2 and "error: no experiment named 'nope'" in r.err and f"known experiments: {NAME}" in r.err
    assert _count(ws_home) == 0
