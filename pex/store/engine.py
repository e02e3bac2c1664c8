"""Where a workspace's metadata lives and how pex connects to it.

The database URL (``PEX_DATABASE_URL``, else SQLite ``pex.db`` in the workspace folder ``PEX_HOME``), the
engine with SQLite's pragmas (WAL, so that readers never block a writer nor each other), URLs with their
password hidden, and the decorator that turns database failures into a :class:`~pex.errors.StoreError`.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from pex.errors import BusyError, StoreError
from pex.store.lock import lock_seconds

DATABASE_FILE = "pex.db"


def default_home() -> Path:
    """The workspace folder: ``PEX_HOME``, else ``./.pex``."""
    return Path(os.environ.get("PEX_HOME", ".pex"))


def workspace_exists(home: str | Path | None = None) -> bool:
    """Whether opening ``home`` read-only can find metadata (a PEX_DATABASE_URL always may)."""
    if os.environ.get("PEX_DATABASE_URL"):
        return True
    return (Path(home) if home is not None else default_home()).joinpath(DATABASE_FILE).exists()


def configured_url(database_url: str | None = None) -> str | None:
    """The database URL given, else ``PEX_DATABASE_URL``; None means SQLite in the workspace folder."""
    return database_url or os.environ.get("PEX_DATABASE_URL") or None


def sqlite_url(home: Path) -> str:
    """The URL of the SQLite database inside the workspace folder ``home``."""
    return f"sqlite:///{home / DATABASE_FILE}"


def make_engine(url: str) -> sa.Engine:
    """A SQLAlchemy engine for ``url``; SQLite connections get WAL mode, foreign keys and a busy timeout."""
    try:
        engine = sa.create_engine(url)
    except (SQLAlchemyError, ImportError) as exc:
        raise StoreError(f"cannot use database URL {redact(url)}: {exc}",
                         "check PEX_DATABASE_URL, e.g. postgresql+psycopg://user:pass@host/db") from None
    if engine.dialect.name == "sqlite":
        # a write waits for another connection's write lock as long as for the workspace lock, then "workspace busy";
        # read here, so that a bad PEX_LOCK_SECONDS is refused when the workspace is opened
        event.listen(engine, "connect", functools.partial(_sqlite_pragmas, busy_ms=round(lock_seconds() * 1000)))
    return engine


def redact(url: str) -> str:
    """``url`` with its password hidden, for messages."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "<unparsable URL>"


def database_error(url: str, doing: str) -> StoreError | BusyError:
    """The StoreError for the database failure being handled (call it inside ``except``); SQLite's write lock held by
    another connection past the busy timeout is a :class:`~pex.errors.BusyError` ("workspace busy", retry)."""
    exc = sys.exc_info()[1]
    if isinstance(exc, OperationalError) and "database is locked" in str(exc):
        return BusyError(f"workspace busy: its database stayed locked by another writer for more than {lock_seconds():g} s",
                         "retry in a few seconds; PEX_LOCK_SECONDS sets how long writers wait")
    detail = f"{exc.__class__.__name__}: {str(exc).splitlines()[0]}" if exc else ""
    return StoreError(
        f"cannot {doing} the metadata database {redact(url)} ({detail})",
        "check that the database server runs, PEX_DATABASE_URL is right and the workspace was created by pex "
        "(`pex ingest SPEC` creates one)",
    )


def db(doing: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a Workspace method: database failures become a StoreError with a hint, OS errors too."""

    def wrap(method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        def inner(self: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                return method(self, *args, **kwargs)
            except SQLAlchemyError:
                raise self._error(doing) from None
            except OSError as exc:
                raise StoreError(f"cannot {doing} the workspace {self.home}: {exc.strerror or exc}",
                                 "check that PEX_HOME is a writable directory with free space") from None
        return inner

    return wrap


def _sqlite_pragmas(dbapi_conn: Any, _record: Any, busy_ms: int) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute(f"PRAGMA busy_timeout={busy_ms:d}")
    cur.close()
