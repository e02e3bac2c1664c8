"""Reading and validating experiment data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pex.errors import DataError
from pex.experiment.data import PROPENSITY, load_dataset, read_table, validate
from pex.experiment.spec import load_spec


@pytest.fixture
def spec(sim_dir):
    return load_spec(sim_dir / "exp.toml")


@pytest.fixture
def frame(sim):
    return sim.data.iloc[:3000].copy()


def test_types_missing_counts_and_propensities(spec, frame):
    ds = validate(frame, spec)
    assert ds.n_units == 3000 and ds.n_dropped == 0
    assert ds.arms == ["control", "daily", "weekly"]
    assert ds.features["country"] == "categorical" and ds.features["platform"] == "categorical"
    assert ds.features["age"] == "numeric" and ds.features["x0"] == "numeric"
    assert set(ds.features) == {"age", "tenure_days", "country", "platform", "sessions_pre", *(f"x{j}" for j in range(8))}
    assert ds.metric_types == {"sessions": "continuous", "converted": "binary", "unsubscribes": "binary"}
    assert ds.missing["age"] == int(frame["age"].isna().sum()) > 0
    assert ds.missing["platform"] == int(frame["platform"].isna().sum()) > 0
    assert ds.propensity_source == "allocation"
    expected = frame["arm"].map({"control": 0.34, "daily": 0.33, "weekly": 0.33}).to_numpy()
    np.testing.assert_allclose(ds.frame[PROPENSITY], expected)


def test_csv_and_parquet_give_the_same_dataset(spec, sim, tmp_path):
    frame = sim.data.iloc[:2000]
    frame.to_csv(tmp_path / "d.csv", index=False)
    frame.to_parquet(tmp_path / "d.parquet", index=False)
    a = validate(read_table(tmp_path / "d.csv", ("user_id", "arm")), spec)
    b = validate(read_table(tmp_path / "d.parquet", ("user_id", "arm")), spec)
    pd.testing.assert_frame_equal(a.frame, b.frame)
    assert a.content_hash() == b.content_hash()


def test_numeric_arm_labels_and_ids_are_text(spec, frame):
    f = frame.assign(arm=frame["arm"].map({"control": 0, "daily": 1, "weekly": 2}), user_id=np.arange(len(frame)))
    from dataclasses import replace

    numeric_spec = replace(spec, control="0", allocation={"0": 0.34, "1": 0.33, "2": 0.33})
    ds = validate(f, numeric_spec)
    assert ds.arms == ["0", "1", "2"]
    assert ds.frame["user_id"].iloc[5] == "5"


def test_drop_invalid_drops_and_counts(spec, frame):
    f = frame.copy()
    f.loc[[3, 10, 11], "arm"] = np.nan
    f.loc[[20], "sessions"] = np.nan
    f.loc[[30], "converted"] = np.inf
    with pytest.raises(DataError, match=r"5 of 3,000 rows .* invalid .*missing arm \('arm'\): 3 rows \(e\.g\. rows 4, 11, 12\)"):
        validate(f, spec)
    ds = validate(f, spec, drop_invalid=True)
    assert ds.n_units == 2995 and ds.n_dropped == 5
    assert ds.dropped == {"missing arm ('arm')": 3, "missing metric 'sessions'": 1, "infinite metric 'converted'": 1}
    assert ds.summary()["n_dropped"] == 5


def test_missing_pre_period_values_are_allowed(spec, frame):
    f = frame.copy()
    f.loc[:99, "sessions_pre"] = np.nan
    ds = validate(f, spec)
    assert ds.missing["sessions_pre"] == 100


def test_propensity_column_is_used(spec, frame):
    from dataclasses import replace

    f = frame.assign(p=0.25)
    ds = validate(f, replace(spec, propensity="p"))
    assert ds.propensity_source == "column"
    assert (ds.frame[PROPENSITY] == 0.25).all()
    assert "p" not in ds.features


def test_observed_shares_without_allocation(spec, frame):
    from dataclasses import replace

    ds = validate(frame, replace(spec, allocation=None))
    shares = frame["arm"].value_counts(normalize=True)
    assert ds.propensity_source == "observed"
    np.testing.assert_allclose(ds.frame[PROPENSITY], frame["arm"].map(shares).to_numpy())


def test_id_like_categorical_feature_gets_a_warning(spec, sim):
    frame = sim.data.iloc[:4000].assign(session_token=lambda d: "t" + d["user_id"])
    from dataclasses import replace

    ds = validate(frame, replace(spec, features=("age", "session_token")))
    assert any("session_token" in w and "id" in w for w in ds.warnings)


def test_content_hash_ignores_row_source_but_not_values(spec, frame):
    a = validate(frame, spec)
    b = validate(frame.copy(), spec)
    assert a.content_hash() == b.content_hash()
    changed = frame.copy()
    changed.loc[0, "sessions"] += 1
    assert validate(changed, spec).content_hash() != a.content_hash()


def test_load_dataset_reads_the_spec_file(spec):
    ds = load_dataset(spec)
    assert ds.n_units == 20_000


# -- labels and types that pandas would otherwise mangle ---------------------------------------

def _two_arm_spec(tmp_path, control="control", arms=("control", "None"), features=None):
    import tomllib

    from pex.experiment.spec import parse_spec

    alloc = "\n".join(f'"{a}" = {1 / len(arms)}' for a in arms)
    feats = f"features = {list(features)!r}\n".replace("'", '"') if features else ""
    text = (f'name = "t"\ndata = "t.csv"\nunit = "u"\narm = "arm"\ncontrol = "{control}"\n'
            f'{feats}[allocation]\n{alloc}\n[metrics.m]\ngoal = "increase"\n')
    return parse_spec(tomllib.loads(text), base_dir=tmp_path, require_data=False)


def test_arm_labels_like_none_or_na_are_labels_not_missing(tmp_path):
    rows = ["u,arm,m,country"] + [f"u{i},{'None' if i % 2 else 'control'},{i},{'NA' if i % 3 else 'US'}" for i in range(60)]
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    spec = _two_arm_spec(tmp_path)
    ds = validate(read_table(tmp_path / "t.csv", ("u", "arm")), spec)
    assert ds.arm_counts() == {"control": 30, "None": 30}


def test_unit_id_written_as_the_parquet_index(tmp_path, sim, spec):
    sim.data.iloc[:1000].set_index("user_id").to_parquet(tmp_path / "d.parquet")
    ds = validate(read_table(tmp_path / "d.parquet", ("user_id", "arm")), spec)
    assert ds.n_units == 1000 and ds.frame["user_id"].iloc[0] == "u0000000"


@pytest.mark.parametrize(("values", "message"), [
    (pd.date_range("2026-01-01", periods=40), "holds dates or durations"),
    (pd.to_timedelta(np.arange(40), unit="D"), "holds dates or durations"),
    ([[1, 2]] * 40, "holds lists, records, bytes or dates"),
    ([1.0, np.inf] * 20, "has infinite values"),
])
def test_unusable_feature_types_are_rejected(tmp_path, values, message):
    spec = _two_arm_spec(tmp_path, arms=("control", "t"), features=["f"])
    d = pd.DataFrame({"u": [f"u{i}" for i in range(40)], "arm": ["control", "t"] * 20, "m": np.arange(40.0), "f": values})
    with pytest.raises(DataError, match=message):
        validate(d, spec)


def test_decimal_and_nullable_boolean_features_are_numeric(tmp_path):
    import decimal

    spec = _two_arm_spec(tmp_path, arms=("control", "t"), features=["dec", "flag"])
    d = pd.DataFrame({"u": [f"u{i}" for i in range(40)], "arm": ["control", "t"] * 20, "m": np.arange(40.0),
                      "dec": [decimal.Decimal("1.5")] * 40, "flag": [True, False, None, True] * 10})
    ds = validate(d, spec)
    assert ds.features == {"dec": "numeric", "flag": "numeric"}
    assert ds.missing["flag"] == 10


def test_a_timestamp_metric_is_rejected(tmp_path):
    spec = _two_arm_spec(tmp_path, arms=("control", "t"))
    d = pd.DataFrame({"u": [f"u{i}" for i in range(40)], "arm": ["control", "t"] * 20, "m": pd.date_range("2026-01-01", periods=40)})
    with pytest.raises(DataError, match="metric column 'm' holds dates"):
        validate(d, spec)


def test_unicode_forms_and_padding_do_not_split_labels(tmp_path):
    import unicodedata

    nfd = unicodedata.normalize("NFD", "café")
    spec = _two_arm_spec(tmp_path, control="café", arms=("café", "t"))
    d = pd.DataFrame({"u": [f" u{i}" if i == 3 else f"u{i}" for i in range(40)], "arm": [nfd, "t "] * 20, "m": np.arange(40.0)})
    ds = validate(d, spec)
    assert ds.arm_counts() == {"café": 20, "t": 20}
    assert ds.frame["u"].iloc[3] == "u3"


def test_huge_float_unit_ids_are_not_collapsed(tmp_path):
    spec = _two_arm_spec(tmp_path, arms=("control", "t"))
    d = pd.DataFrame({"u": [1e19 + 2**12 * i for i in range(40)], "arm": ["control", "t"] * 20, "m": np.arange(40.0)})
    assert validate(d, spec).n_units == 40
