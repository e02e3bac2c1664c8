"""The state every part of a workspace shares: its folder, its database engine, and the writers' lock."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa

from pex.errors import NotFoundError, StoreError
from pex.store.engine import DATABASE_FILE, configured_url, database_error, default_home, make_engine, sqlite_url
from pex.store.lock import held
from pex.store.migrate import ensure_schema


class WorkspaceBase:
    """Opens a workspace: finds its database, checks (and when writable migrates) its schema.

    Opening takes no file lock and, with ``create=False``, writes nothing: readers rely on the
    database (SQLite in WAL mode, PostgreSQL) for consistent concurrent reads.
    """

    def __init__(self, home: str | Path | None = None, database_url: str | None = None, *, create: bool = True) -> None:
        self.home = Path(home) if home is not None else default_home()
        self.artifacts = self.home / "artifacts"
        url = configured_url(database_url)
        self.is_sqlite = url is None or url.startswith("sqlite")
        if url is None:
            if not (self.home / DATABASE_FILE).exists() and not create:
                raise NotFoundError(
                    f"no pex workspace at {self.home.resolve()}",
                    "ingest an experiment first (`pex ingest SPEC`), or point PEX_HOME at an existing workspace",
                )
            url = sqlite_url(self.home)
        if create:
            try:
                self.home.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create the workspace {self.home}: {exc.strerror}",
                                 "point --home / PEX_HOME at a writable directory") from None
        self._url = url
        self.engine: sa.Engine = make_engine(url)
        try:
            # create=True: a new database is created at head, an older schema upgraded; create=False: only checked
            self.schema = ensure_schema(self.engine, url, writable=create)
            try:
                self._opened_as = self._identity()  # what check_identity compares against
            except OSError:  # not statable now (a database path SQLite resolves differently): nothing to compare
                self._opened_as = None
        except BaseException:
            self.engine.dispose()  # a refused database is left alone, with no connection kept open
            raise

    def _identity(self) -> tuple[int, int, int, int] | None:
        """(device, inode) of the workspace folder and of its SQLite database file; None when the database is not a
        file (PostgreSQL, which many hosts share and which ``rm -rf`` of a folder cannot take away)."""
        database = sa.engine.make_url(self._url).database if self.is_sqlite else None
        if not database or database == ":memory:" or database.startswith("file:"):
            return None
        folder, file = os.stat(self.home), os.stat(database)
        return folder.st_dev, folder.st_ino, file.st_dev, file.st_ino

    def check_identity(self) -> None:
        """Raise a StoreError when the workspace folder or its SQLite database is no longer the one opened.

        A process that keeps the workspace open (``pex serve``) holds connections to the database file it opened:
        after ``rm -rf $PEX_HOME`` (or a new workspace made in its place) they still write, into a file nobody
        can read any more. Writers of such a process call this first, so that they fail instead of answering
        success for data that goes nowhere. Two ``stat`` calls; the message names no path (it may reach an HTTP
        body).
        """
        opened = getattr(self, "_opened_as", None)
        if opened is None:
            return
        try:
            now = self._identity()
        except OSError:
            now = None
        if now != opened:
            raise StoreError("the workspace this process opened was removed or replaced (its folder or database file "
                             "is not the one it started with); nothing more can be written to it",
                             "restart the process (e.g. `pex serve`) so that it opens the workspace now at PEX_HOME")

    def _error(self, doing: str) -> StoreError:
        return database_error(self._url, doing)

    def close(self) -> None:
        """Release the database connections."""
        self.engine.dispose()

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read(self) -> sa.Connection:
        return self.engine.connect()

    @contextmanager
    def _lock(self) -> Iterator[None]:
        """An exclusive advisory lock on the workspace (across processes on this host), for writers only.

        Writers that write an artifact and then its row (a dataset version) or allocate a version number
        (datasets, policies) hold it, so that the file and the row stay in step and two writers do not pick
        the same number; the database's unique constraints back it up across hosts. Readers never take it, and
        neither does serving a decision. Taken with a deadline (:mod:`pex.store.lock`): "workspace busy", never a hang.
        A process whose workspace was removed or replaced since it opened it writes nothing (:meth:`check_identity`).
        """
        self.check_identity()  # before the mkdir below, which would quietly re-make a removed folder
        try:
            self.home.mkdir(parents=True, exist_ok=True)
            fh = open(self.home / ".lock", "a+b")
        except OSError as exc:
            raise StoreError(f"cannot lock the workspace {self.home}: {exc.strerror}", "check that PEX_HOME is writable") from None
        with fh, held(fh):  # waits at most PEX_LOCK_SECONDS (5 s), then BusyError: pex.store.lock
            yield
