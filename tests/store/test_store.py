"""The workspace: versioned, content-addressed, atomic; SQLite by default, PostgreSQL by URL."""

from __future__ import annotations

import sqlite3

import pandas as pd
import pytest

from pex.errors import NotFoundError, StoreError
from pex.experiment.data import load_dataset
from pex.experiment.spec import load_spec
from pex.store.workspace import Workspace
from tests.shared import snapshot


@pytest.fixture
def dataset(sim_dir):
    return load_dataset(load_spec(sim_dir / "exp.toml"))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def workspace(request, home):
    if request.param == "sqlite":
        ws = Workspace(home)
    else:
        ws = Workspace(home, database_url=request.getfixturevalue("empty_postgres_url"))
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
    from pex.experiment.data import validate

    frame = dataset.frame.drop(columns="_pex_propensity").iloc[:5000]
    v2 = workspace.put_dataset(validate(frame, spec))
    assert (v1.version, v2.version) == (1, 2) and v2.created
    latest, dv = workspace.load_dataset(spec.name)
    assert dv.version == 2 and latest.n_units == 5000
    old, dv1 = workspace.load_dataset(spec.name, version=1)
    assert dv1.id == v1.id and old.n_units == dataset.n_units
    rows = workspace.list_experiments()
    assert [(r["name"], r["current_version"], r["n_units"]) for r in rows] == [(spec.name, 2, 5000)]


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
    from pex.experiment.data import validate

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


def _ingest_in_subprocess(args):
    home, spec_path, url, n = args
    from pex.experiment.data import validate
    from pex.experiment.spec import load_spec
    from pex.store.workspace import Workspace

    spec = load_spec(spec_path)
    frame = pd.read_csv(spec.data, dtype={"user_id": "string", "arm": "string"}, nrows=n)
    with Workspace(home, database_url=url) as ws:
        return ws.put_dataset(validate(frame, spec)).version


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_concurrent_ingests_of_a_new_experiment(request, backend, home, sim_dir):
    """Four processes ingest at once (two identical datasets, two others): no error, no lost file."""
    import multiprocessing as mp

    url = None
    if backend == "postgresql":
        url = request.getfixturevalue("empty_postgres_url")
    jobs = [(home, sim_dir / "exp.toml", url, n) for n in (3000, 3000, 4000, 5000)]
    with mp.get_context("spawn").Pool(4) as pool:
        versions = pool.map(_ingest_in_subprocess, jobs)
    assert versions[0] == versions[1] and sorted(set(versions)) == [1, 2, 3]
    with Workspace(home, database_url=url) as ws:
        stored = ws.list_dataset_versions("exp")
        assert len(stored) == 3
        for dv in stored:
            dataset, _ = ws.load_dataset("exp", dv.version)  # every committed row has its file
            assert dataset.n_units in (3000, 4000, 5000)


def test_reingesting_restores_a_lost_artifact(home, dataset):
    with Workspace(home) as ws:
        dv = ws.put_dataset(dataset)
        (ws.artifacts / dv.artifact).unlink()
        with pytest.raises(StoreError, match="is missing"):
            ws.load_dataset(dataset.spec.name)
        again = ws.put_dataset(dataset)
        assert again.id == dv.id and not again.created
        back, _ = ws.load_dataset(dataset.spec.name)
        assert back.n_units == dataset.n_units


def test_the_last_ingested_version_is_current(home, dataset, sim_dir):
    from pex.experiment.data import validate

    smaller = validate(dataset.frame.drop(columns="_pex_propensity").iloc[:4000], load_spec(sim_dir / "exp.toml"))
    with Workspace(home) as ws:
        v1 = ws.put_dataset(dataset)
        v2 = ws.put_dataset(smaller)
        assert ws.dataset_version("exp").id == v2.id
        back = ws.put_dataset(dataset)  # the older data again: existing version 1 becomes current
        assert (back.version, back.created) == (1, False)
        assert ws.dataset_version("exp").id == v1.id
        assert ws.list_experiments()[0]["current_version"] == 1


def test_corrupt_database_is_a_store_error(home, dataset):
    with Workspace(home) as ws:
        ws.put_dataset(dataset)
    (home / "pex.db").write_bytes(b"this is not a database" * 100)
    for suffix in ("-wal", "-shm"):
        (home / f"pex.db{suffix}").unlink(missing_ok=True)
    with pytest.raises(StoreError, match=r"cannot (open|read) the metadata database"):
        Workspace(home, create=False).list_experiments()


def test_database_without_pex_tables_is_a_store_error(tmp_path):
    url = f"sqlite:///{tmp_path / 'other.db'}"
    sqlite3.connect(tmp_path / "other.db").execute("CREATE TABLE t (x)").connection.close()
    with pytest.raises(StoreError, match="holds no pex workspace") as info:
        Workspace(tmp_path / "ws", database_url=url, create=False).list_experiments()
    assert "created by pex" in info.value.hint
    assert sqlite3.connect(tmp_path / "other.db").execute("select name from sqlite_master").fetchall() == [("t",)]


def test_unwritable_home_is_a_store_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="cannot create the workspace"):
        Workspace(blocker / "ws")


def test_read_only_open_through_a_database_url_does_not_create_the_home_folder(tmp_path, dataset):
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    with Workspace(tmp_path / "writer", database_url=url) as ws:
        ws.put_dataset(dataset)
    reader_home = tmp_path / "reader"
    with Workspace(reader_home, database_url=url, create=False) as ws:
        assert [e["name"] for e in ws.list_experiments()] == [dataset.spec.name]
    assert not reader_home.exists()


def test_policies_are_versioned_per_name_and_linked_to_their_fit(workspace, dataset):
    dv = workspace.put_dataset(dataset)
    fit = workspace.put_fit(dv.id, "auto", {"manifest.json": "{}", "training.parquet": b"PAR1"}, {"holdout": {"share": 0.25}})
    assert workspace.read_fit_bytes(fit, "training.parquet") == b"PAR1"
    doc = {"format": "pex.policy/1", "name": "exp-tree-d1", "kind": "tree", "arms": ["control", "daily", "weekly"],
           "default_arm": "control", "tree": {"arm": "daily"}, "version": 1}
    first = workspace.put_policies("exp", [(doc, {"value": {"sessions": 1.0}, "version": 1})], fit_id=fit.id)
    second = workspace.put_policies("exp", [(doc, {"value": {"sessions": 2.0}, "version": 1}),
                                            ({**doc, "name": "exp-all-control", "kind": "constant", "tree": None}, None)],
                                    fit_id=fit.id)
    assert [r.version for r in first] == [1] and [r.version for r in second] == [2, 1]
    latest = workspace.get_policy("exp-tree-d1")
    assert latest.version == 2 and latest.document["version"] == 2 and latest.evaluation["version"] == 2
    assert latest.evaluation["value"] == {"sessions": 2.0} and latest.fit_id == fit.id
    assert workspace.get_policy("exp-tree-d1", version=1).evaluation["value"] == {"sessions": 1.0}
    assert [r.name for r in workspace.list_policies("exp")] == ["exp-tree-d1", "exp-all-control"]
    assert workspace.list_policies("exp", fit_id="other") == []
    assert workspace.find_fit(fit.id)[0].id == fit.id
    with pytest.raises(NotFoundError, match=r"no policy 'nope'.*"):
        workspace.get_policy("nope")
    with pytest.raises(NotFoundError, match="no experiment 'other'"):
        workspace.put_policies("other", [(doc, None)])


def test_runs_are_recorded_per_dataset_version_with_their_settings(workspace, dataset):
    """record_run hands ``make`` the earlier runs on the same dataset version (oldest first; rows stored without a
    dataset version are in no history), and a failing ``make`` leaves no row."""
    from pex.store.records import NewRun

    dv = workspace.put_dataset(dataset, source="a.csv")
    name = dataset.spec.name
    workspace.put_run(name, {"old": True})  # a run stored before the history was kept
    seen = []

    def make(policy, version, bound_to=None):
        def inner(earlier, run_id, now):
            seen.append([(r.id, r.settings, r.reason, r.policy, r.policy_version, r.bound_to) for r in earlier])
            return NewRun({"run": run_id}, policy, version, policy, version + 1 if bound_to else version, bound_to)
        return inner

    first = workspace.record_run(name, dv.id, {"seed": 0}, None, make("p", 1))
    second = workspace.record_run(name, dv.id, {"seed": 1}, None, make("p", 1, bound_to=first.id))
    with pytest.raises(RuntimeError, match="boom"):
        workspace.record_run(name, dv.id, {"seed": 2}, "why", lambda *a: (_ for _ in ()).throw(RuntimeError("boom")))
    third = workspace.record_run(name, dv.id, {"seed": 2}, "why", make("q", 3))
    assert seen[0] == [] and seen[1] == [(first.id, {"seed": 0}, None, "p", 1, None)]
    assert [r[0] for r in seen[2]] == [first.id, second.id]  # the failed run left nothing behind
    history = workspace.run_history(name, dv.id)
    assert [(r.id, r.settings, r.reason, r.policy, r.policy_version, r.own_version, r.binds) for r in history] == [
        (first.id, {"seed": 0}, None, "p", 1, 1, True), (second.id, {"seed": 1}, None, "p", 1, 2, False),
        (third.id, {"seed": 2}, "why", "q", 3, 3, True)]
    assert workspace.run_summary(second.id) == {"run": second.id}
    assert workspace.latest_run(name) == {"run": third.id}
    with pytest.raises(NotFoundError):
        workspace.run_summary(999)
