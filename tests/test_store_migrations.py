"""Schema migrations: a workspace of the release before migrations is checked and upgraded, a new one is made
at head, one newer than this code (or unrecognisable) is refused untouched; reads take no lock; atomic files."""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from pex.errors import StoreError
from pex.files import replacing, write_atomic, write_folder_atomic
from pex.store import migrate
from pex.store.schema import VERSION_TABLE, metadata, schema_info
from pex.store.workspace import Workspace
from tests.conftest import snapshot

OLD = Path(__file__).resolve().parent / "fixtures" / "old_workspace"
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture
def old_home(tmp_path) -> Path:
    """A private copy of the workspace made by the release before migrations (tests/fixtures/make_old_workspace.py)."""
    home = tmp_path / "old"
    shutil.copytree(OLD, home)
    return home


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


def test_the_fixture_is_a_release_1_workspace(old_home):
    con = sqlite3.connect(old_home / "pex.db")  # never the fixture itself: opening a WAL database leaves files
    try:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert VERSION_TABLE not in tables and set(migrate.RELEASE_1_TABLES) <= tables
        assert con.execute("SELECT value FROM schema_info WHERE key = 'schema_version'").fetchall() == [("1",)]
    finally:
        con.close()


def test_old_workspace_is_read_as_it_stands_without_a_lock_or_a_write(old_home):
    before = snapshot(old_home)
    with Workspace(old_home, create=False) as ws:
        assert ws.schema.kind == "release-1"
        assert [e["name"] for e in ws.list_experiments()] == ["exp"]
        dataset, dv = ws.load_dataset("exp")
        assert dataset.n_units == dv.n_units == 2000
        assert ws.get_policy("exp-all-daily").version == 2
        assert ws.latest_run("exp")["recommendation"] == {"policy": "exp-all-control"}
    assert snapshot(old_home) == before
    assert not (old_home / ".lock").exists()


def test_old_workspace_is_upgraded_to_head_and_keeps_its_data(old_home):
    with Workspace(old_home, create=False) as ws:  # what release 1 stored, read before the upgrade
        expected = {
            "experiments": ws.list_experiments(),
            "versions": [v.to_dict() for v in ws.list_dataset_versions("exp")],
            "policies": [(p.name, p.version, p.document, p.evaluation, p.fit_id) for p in ws.list_policies("exp")],
            "v1": ws.get_policy("exp-all-control", version=1).evaluation,
            "fit": ws.get_fit("exp"),
            "analysis": ws.latest_analysis("exp"),
            "run": ws.latest_run("exp"),
        }
        frame = ws.load_dataset("exp")[0].frame
    with Workspace(old_home) as ws:
        assert ws.schema.kind == "release-1"  # what it found, and then stamped
        assert revisions(sqlite_url(old_home)) == [migrate.head_revision()]
        assert ws.list_experiments() == expected["experiments"]
        assert [v.to_dict() for v in ws.list_dataset_versions("exp")] == expected["versions"]
        assert [(p.name, p.version, p.document, p.evaluation, p.fit_id) for p in ws.list_policies("exp")] \
            == expected["policies"]
        assert [p.version for p in ws.list_policies("exp")] == [2, 2]
        assert ws.get_policy("exp-all-control", version=1).evaluation == expected["v1"]
        assert ws.get_fit("exp") == expected["fit"]
        assert ws.read_fit_file(expected["fit"][0], "manifest.json") == '{"stand_in": true}\n'
        assert ws.latest_analysis("exp") == expected["analysis"] and ws.latest_run("exp") == expected["run"]
        assert ws.load_dataset("exp")[0].frame.equals(frame)
        # and it is writable as any workspace
        doc = ws.get_policy("exp-all-daily").document
        assert ws.put_policies("exp", [(doc, None)])[0].version == 3
    with sqlite3.connect(old_home / "pex.db") as con:
        assert con.execute("SELECT value FROM schema_info WHERE key = 'schema_version'").fetchall() == [("1",)]


def test_reopening_an_upgraded_workspace_is_a_no_op(old_home):
    Workspace(old_home).close()
    before = snapshot(old_home)
    for create in (True, False):
        with Workspace(old_home, create=create) as ws:
            assert ws.schema.kind == "revision" and ws.schema.revision == migrate.head_revision()
            ws.list_experiments()
    assert snapshot(old_home) == before


@pytest.mark.parametrize("database", BACKENDS, indirect=True)
def test_a_new_workspace_is_created_at_head_and_matches_the_tables_the_code_uses(database):
    home, url = database
    with Workspace(home, database_url=url) as ws:
        assert ws.schema.kind == "empty"
        assert revisions(url) == [migrate.head_revision()]
        with ws.engine.connect() as conn:
            diffs = compare_metadata(MigrationContext.configure(conn), metadata)
            assert conn.execute(sa.select(schema_info.c.value)).scalars().all() == ["1"]
    # Alembic leaves its own table out of the comparison, so the metadata's copy of it shows as "missing"
    assert [d for d in diffs if not (d[0] == "add_table" and d[1].name == VERSION_TABLE)] == []


@pytest.mark.parametrize("database", BACKENDS, indirect=True)
def test_a_release_1_database_is_stamped_keeping_its_rows(database):
    """What release 1 did on first open (create_all, then the schema_version row), then today's code."""
    home, url = database
    engine = sa.create_engine(url)
    release_1 = [t for t in metadata.sorted_tables if t.name in migrate.RELEASE_1_TABLES]
    metadata.create_all(engine, tables=release_1)
    with engine.begin() as conn:
        conn.execute(schema_info.insert().values(key="schema_version", value="1"))
        conn.execute(sa.text("INSERT INTO experiments (name, description, owner, spec, created_at, updated_at) "
                             "VALUES ('kept', '', '', '{}', '2026-01-01', '2026-01-01')"))
    engine.dispose()
    with Workspace(home, database_url=url) as ws:
        assert ws.schema.kind == "release-1"
        assert [e["name"] for e in ws.list_experiments()] == ["kept"]
    assert revisions(url) == [migrate.head_revision()]


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


def test_refusing_leaves_the_sqlite_file_byte_for_byte_unchanged(old_home):
    Workspace(old_home).close()
    _stamp_unknown(sqlite_url(old_home))
    before = snapshot(old_home)
    with pytest.raises(StoreError, match="does not know"):
        Workspace(old_home)
    assert snapshot(old_home) == before and not (old_home / "pex.db-wal").exists()


@pytest.mark.parametrize(("sql", "message"), [
    ("ALTER TABLE runs ADD COLUMN extra TEXT", r"tables do not match it: runs \(missing: -; unexpected: extra\)"),
    ("DROP TABLE runs", r"runs \(missing: created_at, experiment, fit_id, id, summary"),
    ("UPDATE schema_info SET value = '7'", "has schema_version '7'"),
    ("DROP TABLE schema_info", "no schema_info or alembic_version table"),
])
def test_an_unrecognisable_database_is_refused_and_left_untouched(old_home, sql, message):
    with sqlite3.connect(old_home / "pex.db") as con:
        con.execute(sql)
    con.close()
    before = snapshot(old_home)
    for create in (True, False):
        with pytest.raises(StoreError, match=message) as info:
            Workspace(old_home, create=create)
        assert info.value.hint
    assert snapshot(old_home) == before


def test_revision_row_without_tables_is_refused(tmp_path):
    home = tmp_path / "ws"
    Workspace(home).close()
    with sqlite3.connect(home / "pex.db") as con:
        con.execute("DROP TABLE runs")
    con.close()
    with pytest.raises(StoreError, match="has no table runs"):
        Workspace(home)


def test_reads_and_opens_take_no_lock(old_home, monkeypatch):
    def refuse(self):
        raise AssertionError("a read took the workspace lock")

    Workspace(old_home).close()  # upgraded: a writable open at head takes no lock either
    monkeypatch.setattr(Workspace, "_lock", refuse)
    for create in (True, False):
        with Workspace(old_home, create=create) as ws:
            ws.list_experiments()
            ws.load_dataset("exp")
            fit, _ = ws.get_fit("exp")
            ws.find_fit(fit.id)
            ws.get_policy("exp-all-control")
            ws.list_policies("exp")
            ws.latest_run("exp")
            ws.latest_analysis("exp")


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
