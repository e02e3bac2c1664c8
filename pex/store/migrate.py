"""Bring a workspace's metadata database to the schema this code knows, or refuse it.

The schema is versioned by Alembic (the revisions in ``migrations/versions``; ``alembic_version`` holds the
one a database is at). On open, :func:`ensure_schema` looks at the database without writing and finds one of

* **empty** (none of pex's tables): created at head, unless the open is read-only;
* **at a known revision**: at head nothing happens; an older one is upgraded by a writable open, and read as
  it stands by a read-only one (below);
* anything else (a revision this code does not know, i.e. written by a newer pex; several heads; pex-like
  tables without an ``alembic_version`` table): refused with a StoreError, and nothing is written to it.

Migrations run in one transaction that first takes a lock in the database itself (SQLite: ``BEGIN
IMMEDIATE``, the database's write lock; PostgreSQL: a transaction-scoped advisory lock), then looks again:
concurrent openers on any host wait and find the work done. No workspace file lock is needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy.exc import SQLAlchemyError

from pex.errors import StoreError
from pex.store.engine import database_error, redact
from pex.store.schema import PEX_TABLES, VERSION_TABLE

MIGRATIONS = Path(__file__).resolve().with_name("migrations")
# every revision after this one only adds tables: a read-only open may read a database at it or later as it stands
ADDITIVE_SINCE = "0001"
# pg_advisory_xact_lock key held while migrating ("pex" + schema): any constant shared by all pex versions
_PG_LOCK_KEY = 0x706578_0001

_UPGRADE_HINT = "upgrade pex (e.g. `pip install -U pex`) to a release that knows it; this pex left it untouched"


@dataclass(frozen=True)
class SchemaState:
    """What :func:`schema_state` found: ``kind`` is "empty" or "revision" (then ``revision`` is set)."""

    kind: str
    revision: str | None = None


def alembic_config(connection: sa.Connection | None = None) -> Config:
    """An Alembic configuration for the migrations shipped in this package (no alembic.ini)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("path_separator", "os")
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    """The newest revision this code knows."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def schema_state(conn: sa.Connection, url: str) -> SchemaState:
    """Look at the database behind ``conn`` (reads only) and say what it is; refuse what pex cannot read."""
    inspector = sa.inspect(conn)
    tables = set(inspector.get_table_names())
    where = redact(url)
    if VERSION_TABLE in tables:
        revisions = [r[0] for r in conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}"))]
        script = ScriptDirectory.from_config(alembic_config())
        known = {s.revision for s in script.walk_revisions()}
        unknown = [r for r in revisions if r not in known]
        if unknown:
            raise StoreError(f"the metadata database {where} is at schema revision {', '.join(unknown)}, which this pex "
                             f"does not know (it knows up to {script.get_current_head()}): a newer pex wrote it, "
                             "or another application's migrations", _UPGRADE_HINT)
        if len(revisions) != 1:
            raise StoreError(f"the metadata database {where} records {len(revisions)} schema revisions in {VERSION_TABLE} "
                             "instead of one", "restore the workspace from a backup, or open it with the pex that wrote it")
        # at head every table must be there; an older revision lacks the tables later ones add, which upgrading
        # creates (and a read-only open reads it as it stands, see ensure_schema)
        missing = PEX_TABLES - tables if revisions[0] == script.get_current_head() else set()
        if missing:
            raise StoreError(f"the metadata database {where} is at schema revision {revisions[0]} but has no table "
                             f"{', '.join(sorted(missing))}", "the database was changed by hand; restore it from a backup")
        return SchemaState("revision", revisions[0])
    if not tables & PEX_TABLES:
        return SchemaState("empty")
    raise StoreError(f"the metadata database {where} has tables named like pex's ({', '.join(sorted(tables & PEX_TABLES))}) "
                     f"but no {VERSION_TABLE} table: it is no pex workspace this pex can recognise",
                     "point PEX_DATABASE_URL / PEX_HOME at a pex workspace, or at an empty database of its own")


def ensure_schema(engine: sa.Engine, url: str, *, writable: bool) -> SchemaState:
    """Check the database and, when ``writable``, create or migrate it to head; returns the state found first.

    A read-only open never writes: it reads a known older schema as it stands, because every revision after
    0001 so far only adds tables (:data:`ADDITIVE_SINCE`), so the older tables read the same; a command that
    reads a table the older schema lacks fails with a hint to upgrade. It refuses the rest with a hint.
    """
    head = head_revision()
    try:
        with engine.connect() as conn:
            state = schema_state(conn, url)
    except SQLAlchemyError:
        raise _open_error(url) from None
    if state.kind == "revision" and state.revision == head:
        return state
    if not writable:
        if state.kind == "empty":
            raise StoreError(f"the metadata database {redact(url)} holds no pex workspace (no such table: {VERSION_TABLE})",
                             "check PEX_DATABASE_URL / PEX_HOME; the workspace was created by pex with `pex ingest SPEC`")
        if int(state.revision) >= int(ADDITIVE_SINCE):
            return state  # older tables unchanged since; the next writable open upgrades it
        raise StoreError(f"the metadata database {redact(url)} is at schema revision {state.revision}; "
                         f"this pex reads revision {head}",
                         "run a pex command that writes to the workspace once (e.g. `pex ingest SPEC`): it upgrades it")
    try:
        with engine.connect() as conn:
            _lock_for_migration(conn)
            state = schema_state(conn, url)  # again, under the lock: another process may have done it meanwhile
            if not (state.kind == "revision" and state.revision == head):
                command.upgrade(alembic_config(conn), "head")
            conn.commit()
    except SQLAlchemyError:
        raise _open_error(url) from None
    return state


def _lock_for_migration(conn: sa.Connection) -> None:
    """Begin the migration transaction holding a lock that every other pex opener waits for."""
    if conn.dialect.name == "sqlite":
        # pysqlite begins transactions only before DML; BEGIN IMMEDIATE makes the DDL transactional as well
        # and takes SQLite's write lock now (others wait up to busy_timeout)
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    elif conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})


def _open_error(url: str) -> StoreError:
    return database_error(url, "open")
