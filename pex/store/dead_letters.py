"""Decisions that were answered but could not be written to the decision log: kept in the workspace, not dropped.

A serving process writes a row here when the store refuses that one row (it poisons every batch it is in), when
the workspace's database was removed or replaced under the server, or when the store is still down at shutdown.
Each process appends to its own file, ``<home>/serve/dead-letter/<pid>-<YYYYMMDD>.jsonl``, one JSON object a line:
``{"error": why, "row": the decision as the log would hold it}`` with ``decided_at`` in ISO 8601. Lines are
ASCII (JSON escapes), so even a unit id that no database accepts (a lone surrogate) is kept exactly. Every write
is flushed and fsynced before it returns: once a row is counted as dead-lettered, it is on disk.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

FOLDER = Path("serve") / "dead-letter"


def dead_letter_folder(home: str | Path) -> Path:
    """Where the serving processes of workspace ``home`` keep their dead-letter files."""
    return Path(home) / FOLDER


class DeadLetterFile:
    """This process's dead-letter file of workspace ``home`` (created, with its folders, on the first write)."""

    def __init__(self, home: str | Path) -> None:
        self.folder = dead_letter_folder(home)
        self.written = 0  # rows this process has dead-lettered

    def path(self) -> Path:
        """Today's file of this process (a process that runs past midnight starts a new one)."""
        return self.folder / f"{os.getpid()}-{datetime.now(UTC):%Y%m%d}.jsonl"

    def write(self, rows: Sequence[dict[str, Any]], error: str) -> int:
        """Append ``rows`` with the reason ``error``, on disk when this returns; raises OSError when it cannot."""
        if not rows:
            return 0
        text = "".join(dead_letter_line(row, error) + "\n" for row in rows)
        # the folder may be gone with the workspace it was in (rm -rf): the rows matter more than its absence
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.path()
        new = not path.exists()
        with open(path, "a", encoding="ascii") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        if new:  # the file's name must survive a crash too, not only its contents
            _fsync_folder(self.folder)
        self.written += len(rows)
        return len(rows)


def dead_letter_line(row: dict[str, Any], error: str) -> str:
    """One line of a dead-letter file (without its newline): ASCII JSON of the error and the row."""
    return json.dumps({"error": error, "row": _plain(row)}, ensure_ascii=True, default=str)


def read_dead_letters(home: str | Path) -> Iterator[dict[str, Any]]:
    """Every dead-lettered ``{"error", "row"}`` of workspace ``home``, file by file (for replaying and counting)."""
    folder = dead_letter_folder(home)
    if not folder.is_dir():
        return
    for path in sorted(folder.glob("*.jsonl")):
        with open(path, encoding="ascii") as fh:
            for line in fh:
                if line.strip():
                    yield json.loads(line)


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    """The row with its timestamp as ISO text (everything else in a decision row is JSON already)."""
    at = row.get("decided_at")
    return {**row, "decided_at": at.isoformat()} if isinstance(at, datetime) else dict(row)


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
