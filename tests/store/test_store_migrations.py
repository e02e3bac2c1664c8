"""Schema migrations: a new workspace is made at head, one at an older revision is read as it stands and upgraded
keeping its rows, one newer than this code (or unrecognisable) is refused untouched; reads take no lock; atomic files."""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from pex.errors import StoreError
from pex.files import replacing, write_atomic, write_folder_atomic
from pex.policy.constant import constant_policy
from pex.store import migrate
from pex.store.schema import VERSION_TABLE, metadata
from pex.store.workspace import Workspace
from tests.served import ingest
from tests.shared import snapshot

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> Path:
    """A workspace with rows in the tables of every revision's kind: an experiment of 2,000 units ingested and
    analysed, a fit (a stand-in folder of two tiny files: opening a workspace never reads them), two versions of
    a policy and a run (never modify it)."""
    base = tmp_path_factory.mktemp("made")
    ingest(base / "exp", base / "ws")
    with Workspace(base / "ws") as ws:
        _, dv = ws.load_dataset("exp")
        ws.put_analysis("exp", dv.id, {"srm": {"ok": True}})
        fit = ws.put_fit(dv.id, "t", {"manifest.json": '{"stand_in": true}\n', "models/0000.txt": "tree\n"},
                         {"holdout": {"share": 0.25, "seed": 0}, "learner": "t"})
        for value in (0.0, 0.1):  # versions 1 and 2
            doc = constant_policy(["control", "daily", "weekly"], "control", name="exp-all-control").to_document()
            ws.put_policies("exp", [(doc, {"value": {"sessions": value}})], fit_id=fit.id)
        ws.put_run("exp", {"experiment": "exp", "recommendation": {"policy": "exp-all-control"}}, fit_id=fit.id)
    return base / "ws"


@pytest.fixture
def home_copy(made, tmp_path) -> Path:
    """A private copy of :func:`made`."""
    shutil.copytree(made, tmp_path / "ws")
    return tmp_path / "ws"


@pytest.fixture
def database(request, tmp_path):
    """(home, database URL) of an empty database: SQLite in the home folder, or the test PostgreSQL server."""
    home = tmp_path / "ws"
    if request.param == "sqlite":
        home.mkdir()
        return home, f"sqlite:///{home / 'pex.db'}"
    return home, request.getfixturevalue("empty_postgres_url")


def revisions(url: str) -> list[str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return [r[0] for r in conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}"))]
    finally:
        engine.dispose()


def sqlite_url(home: Path) -> str:
    return f"sqlite:///{home / 'pex.db'}"


@pytest.mark.parametrize("database", BACKENDS, indirect=True)
def test_a_new_workspace_is_created_at_head_and_matches_the_tables_the_code_uses(database):
    home, url = database
    with Workspace(home, database_url=url) as ws:
        assert ws.schema.kind == "empty"
        assert revisions(url) == [migrate.head_revision()]
        with ws.engine.connect() as conn:
            diffs = compare_metadata(MigrationContext.configure(conn), metadata)
    # Alembic leaves its own table out of the comparison, so the metadata's copy of it shows as "missing"
    assert [d for d in diffs if not (d[0] == "add_table" and d[1].name == VERSION_TABLE)] == []


@pytest.mark.parametrize("database", BACKENDS, indirect=True)
def test_a_database_at_an_older_revision_is_read_as_it_stands_then_upgraded_keeping_its_rows(database):
    home, url = database
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        command.upgrade(migrate.alembic_config(conn), "0001")
        conn.execute(sa.text("INSERT INTO experiments (name, description, owner, spec, created_at, updated_at) "
                             "VALUES ('kept', '', '', '{}', '2026-01-01', '2026-01-01')"))
    engine.dispose()
    with Workspace(home, database_url=url, create=False) as ws:  # read-only: the older tables read the same
        assert (ws.schema.kind, ws.schema.revision) == ("revision", "0001")
        assert [e["name"] for e in ws.list_experiments()] == ["kept"]
    assert revisions(url) == ["0001"]
    with Workspace(home, database_url=url) as ws:
        assert (ws.schema.kind, ws.schema.revision) == ("revision", "0001")  # what it found, and then upgraded
        assert [e["name"] for e in ws.list_experiments()] == ["kept"]
    assert revisions(url) == [migrate.head_revision()]
    with Workspace(home, database_url=url) as ws:
        assert (ws.schema.kind, ws.schema.revision) == ("revision", migrate.head_revision())


@pytest.mark.parametrize("database", BACKENDS, indirect=True)
def test_revision_0005_adds_jobs_rollups_and_release_notes_keeping_releases_and_goes_back_down(database):
    home, url = database
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        command.upgrade(migrate.alembic_config(conn), "0004")
        conn.execute(sa.text("INSERT INTO releases (policy, action, from_version, to_version, actor, created_at) "
                             "VALUES ('p', 'publish', NULL, 1, 'cli:me', '2026-01-01')"))
    engine.dispose()
    with Workspace(home, database_url=url) as ws:  # upgraded to head on open
        assert [(r.policy, r.to_version, r.actor) for r in ws.releases()] == [("p", 1, "cli:me")]
        assert ws.list_jobs() == [] and ws.decision_hours() == [] and ws.rollup_marks() == {}
        job = ws.put_job("run", {"experiment": "exp"}, "tests", "exp")
        assert ws.claim_job("w:1").id == job.id
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            assert conn.execute(sa.text("SELECT note FROM releases")).scalar() is None
            command.downgrade(migrate.alembic_config(conn), "0004")
        tables = set(sa.inspect(engine).get_table_names())
        assert not tables & {"jobs", "decision_hours", "outcome_hours", "rollup_marks"}
        assert "note" not in {c["name"] for c in sa.inspect(engine).get_columns("releases")}
    finally:
        engine.dispose()
    assert revisions(url) == ["0004"]


def test_reopening_a_workspace_at_head_is_a_no_op(home_copy):
    before = snapshot(home_copy)
    for create in (True, False):
        with Workspace(home_copy, create=create) as ws:
            assert ws.schema.kind == "revision" and ws.schema.revision == migrate.head_revision()
            ws.list_experiments()
    assert snapshot(home_copy) == before


def _stamp_unknown(url: str) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text(f"UPDATE {VERSION_TABLE} SET version_num = '9999_from_the_future'"))
    engine.dispose()


@pytest.mark.parametrize("database", BACKENDS, indirect=True)
def test_a_database_at_an_unknown_revision_is_refused_and_left_untouched(database):
    home, url = database
    Workspace(home, database_url=url).close()
    _stamp_unknown(url)
    before = snapshot(home)
    for create in (True, False):
        with pytest.raises(StoreError, match="revision 9999_from_the_future, which this pex does not know") as info:
            Workspace(home, database_url=url, create=create)
        assert "upgrade pex" in info.value.hint
    assert snapshot(home) == before
    assert revisions(url) == ["9999_from_the_future"]


def test_refusing_leaves_the_sqlite_file_byte_for_byte_unchanged(home_copy):
    _stamp_unknown(sqlite_url(home_copy))
    before = snapshot(home_copy)
    with pytest.raises(StoreError, match="does not know"):
        Workspace(home_copy)
    assert snapshot(home_copy) == before and not (home_copy / "pex.db-wal").exists()


@pytest.mark.parametrize("sql", [
    # what pex wrote before the schema had migrations: its tables and a schema_info row, no revision
    f"DROP TABLE {VERSION_TABLE}",
    f"DROP TABLE {VERSION_TABLE}; DROP TABLE schema_info",
])
def test_pex_like_tables_without_a_revision_are_refused_and_left_untouched(home_copy, sql):
    with sqlite3.connect(home_copy / "pex.db") as con:
        con.executescript(sql)
    con.close()
    before = snapshot(home_copy)
    for create in (True, False):
        with pytest.raises(StoreError, match=f"has tables named like pex's .* but no {VERSION_TABLE} table") as info:
            Workspace(home_copy, create=create)
        assert "PEX_HOME" in info.value.hint
    assert snapshot(home_copy) == before


def test_revision_row_without_tables_is_refused(tmp_path):
    home = tmp_path / "ws"
    Workspace(home).close()
    with sqlite3.connect(home / "pex.db") as con:
        con.execute("DROP TABLE runs")
    con.close()
    with pytest.raises(StoreError, match="has no table runs"):
        Workspace(home)


def test_reads_and_opens_take_no_lock(home_copy, monkeypatch):
    def refuse(self):
        raise AssertionError("a read took the workspace lock")

    monkeypatch.setattr(Workspace, "_lock", refuse)
    for create in (True, False):  # at head, a writable open takes no lock either
        with Workspace(home_copy, create=create) as ws:
            assert [e["name"] for e in ws.list_experiments()] == ["exp"]
            assert ws.load_dataset("exp")[0].n_units == 2000
            fit, _ = ws.get_fit("exp")
            assert ws.find_fit(fit.id)[0].id == fit.id
            assert ws.get_policy("exp-all-control").version == 2
            assert [p.version for p in ws.list_policies("exp")] == [2]
            assert ws.latest_run("exp")["recommendation"] == {"policy": "exp-all-control"}
            assert ws.latest_analysis("exp") is not None


# -- pex.files ---------------------------------------------------------------------------------------------------


def test_write_atomic_replaces_the_whole_file(tmp_path):
    target = tmp_path / "sub" / "a.json"
    write_atomic(target, "old\n")
    write_atomic(target, b"new\n")
    assert target.read_bytes() == b"new\n" and os.listdir(target.parent) == ["a.json"]


def test_a_failure_mid_write_leaves_the_old_file_and_no_temporary_file(tmp_path, monkeypatch):
    target = tmp_path / "a.json"
    write_atomic(target, "old\n")
    with pytest.raises(RuntimeError), replacing(target) as tmp:
        tmp.write_text("half a ne")
        raise RuntimeError("disk on fire")
    assert target.read_text() == "old\n" and os.listdir(tmp_path) == ["a.json"]

    def no_rename(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", no_rename)
    with pytest.raises(OSError, match="No space"):
        write_atomic(target, "new\n")
    assert target.read_text() == "old\n" and os.listdir(tmp_path) == ["a.json"]


def test_concurrent_writers_get_their_own_temporary_files(tmp_path):
    target = tmp_path / "a.json"
    with replacing(target) as one, replacing(target) as two:
        assert one != two and one.parent == two.parent == tmp_path
        one.write_text("one")
        two.write_text("two")
    assert target.read_text() == "one" and os.listdir(tmp_path) == ["a.json"]  # the outer one renamed last


def test_a_folder_is_written_whole_or_not_at_all(tmp_path):
    write_folder_atomic(tmp_path / "fit", {"manifest.json": "{}", "models/0000.txt": b"tree"})
    assert (tmp_path / "fit" / "models" / "0000.txt").read_bytes() == b"tree"
    with pytest.raises(TypeError):
        write_folder_atomic(tmp_path / "broken", {"manifest.json": "{}", "models/0000.txt": 7})  # type: ignore[dict-item]
    assert sorted(os.listdir(tmp_path)) == ["fit"]


def test_written_files_get_the_mode_a_plain_write_would(tmp_path):
    """Atomic writes go through a private temporary file; the result must still be readable like any new file
    (the umask's mode), and a replaced file keeps its own mode."""
    import os
    import stat

    old = os.umask(0o022)
    try:
        import importlib

        import pex.files

        importlib.reload(pex.files)
        fresh = tmp_path / "fresh.txt"
        pex.files.write_atomic(fresh, "x")
        assert stat.S_IMODE(fresh.stat().st_mode) == 0o644
        kept = tmp_path / "kept.txt"
        kept.write_text("old")
        kept.chmod(0o640)
        pex.files.write_atomic(kept, "new")
        assert stat.S_IMODE(kept.stat().st_mode) == 0o640 and kept.read_text() == "new"
    finally:
        os.umask(old)


def test_an_unwritable_folder_is_reported_by_the_path_asked_for(tmp_path, monkeypatch):
    """The temporary file is pex's business: when it cannot be created, the error names the user's path."""
    import errno
    import tempfile

    import pytest

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / ".out.csv.x1y2.tmp"))

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(OSError) as raised:
        write_atomic(tmp_path / "out.csv", "x")
    assert raised.value.filename == str(tmp_path / "out.csv") and raised.value.errno == errno.EACCES
