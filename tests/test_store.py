"""The workspace: versioned, content-addressed, atomic; SQLite by default, PostgreSQL by URL."""

from __future__ import annotations

import sqlite3

import pandas as pd
import pytest
import sqlalchemy as sa

from pex.data import load_dataset
from pex.errors import NotFoundError, StoreError
from pex.spec import load_spec
from pex.store import Workspace, _metadata
from tests.conftest import snapshot


@pytest.fixture
def dataset(sim_dir):
    return load_dataset(load_spec(sim_dir / "exp.toml"))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def workspace(request, home):
    if request.param == "sqlite":
        ws = Workspace(home)
    else:
        url = request.getfixturevalue("postgres_url")
        engine = sa.create_engine(url)
        _metadata.drop_all(engine)  # each test starts from an empty database
        engine.dispose()
        ws = Workspace(home, database_url=url)
    yield ws
    ws.close()


def test_ingesting_identical_data_returns_the_existing_version(workspace, dataset):
    first = workspace.put_dataset(dataset, source="a.csv")
    again = workspace.put_dataset(dataset, source="b.csv")
    assert first.created and not again.created
    assert (again.id, again.version, again.content_hash) == (first.id, 1, first.content_hash)
    assert len(workspace.list_dataset_versions(dataset.spec.name)) == 1
    assert len(list((workspace.artifacts / "datasets").glob("*.parquet"))) == 1


def test_changed_data_makes_a_new_version_and_old_versions_stay_readable(workspace, dataset, sim_dir):
    v1 = workspace.put_dataset(dataset)
    spec = load_spec(sim_dir / "exp.toml")
    from pex.data import validate

    frame = dataset.frame.drop(columns="_pex_propensity").iloc[:5000]
    v2 = workspace.put_dataset(validate(frame, spec))
    assert (v1.version, v2.version) == (1, 2) and v2.created
    latest, dv = workspace.load_dataset(spec.name)
    assert dv.version == 2 and latest.n_units == 5000
    old, dv1 = workspace.load_dataset(spec.name, version=1)
    assert dv1.id == v1.id and old.n_units == dataset.n_units
    rows = workspace.list_experiments()
    assert [(r["name"], r["latest_version"], r["n_units"]) for r in rows] == [(spec.name, 2, 5000)]


def test_round_trip_preserves_rows_types_and_summary(workspace, dataset):
    workspace.put_dataset(dataset)
    back, _ = workspace.load_dataset(dataset.spec.name)
    pd.testing.assert_frame_equal(back.frame, dataset.frame)
    assert back.summary() == dataset.summary()
    assert back.spec.metrics == dataset.spec.metrics
    assert back.content_hash() == dataset.content_hash()


def test_unknown_experiment_and_version_are_not_found(workspace, dataset):
    with pytest.raises(NotFoundError, match="no experiment named 'nope'"):
        workspace.load_dataset("nope")
    workspace.put_dataset(dataset)
    with pytest.raises(NotFoundError, match="has no dataset version 7"):
        workspace.load_dataset(dataset.spec.name, version=7)


def test_analyses_are_linked_to_their_dataset_version(workspace, dataset):
    dv = workspace.put_dataset(dataset)
    workspace.put_analysis(dataset.spec.name, dv.id, {"srm": {"p_value": 0.5, "ok": True}, "x": float("nan")})
    assert workspace.latest_analysis(dataset.spec.name) == {"srm": {"p_value": 0.5, "ok": True}, "x": None}


def test_sqlite_metadata_uses_wal_mode(home, dataset):
    with Workspace(home) as ws:
        ws.put_dataset(dataset)
        with ws.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def test_failed_metadata_write_leaves_the_old_state(home, dataset, sim_dir):
    """A real failure inside the transaction (a trigger aborts the insert) changes nothing."""
    with Workspace(home) as ws:
        ws.put_dataset(dataset)
    before = snapshot(home)
    con = sqlite3.connect(home / "pex.db")
    con.execute("CREATE TRIGGER fail_insert BEFORE INSERT ON dataset_versions "
                "BEGIN SELECT RAISE(ABORT, 'disk on fire'); END")
    con.commit()
    con.close()
    before = snapshot(home)
    from pex.data import validate

    smaller = validate(dataset.frame.drop(columns="_pex_propensity").iloc[:3000], load_spec(sim_dir / "exp.toml"))
    with Workspace(home) as ws:
        with pytest.raises(StoreError, match="could not record the dataset version"):
            ws.put_dataset(smaller)
        # the experiment row update was rolled back with the failed insert, and no artifact is left
        assert [dv.version for dv in ws.list_dataset_versions(dataset.spec.name)] == [1]
    assert snapshot(home) == before


def test_read_only_use_does_not_create_a_workspace(home):
    with pytest.raises(NotFoundError, match="no pex workspace"):
        Workspace(home, create=False)
    assert not home.exists()


def test_unusable_database_url_is_a_clear_error(home):
    with pytest.raises(StoreError, match="cannot"):
        Workspace(home, database_url="postgresql+psycopg://nobody@127.0.0.1:1/none")
