"""Atomic file writes: a reader sees the old file (or folder) or the whole new one, never a part.

Every artifact pex writes goes through here: the store's datasets and fits, the run's summary,
policies and report. Imports nothing from pex but :mod:`pex.errors`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

__all__ = ["fsync_dir", "replacing", "write_atomic", "write_folder_atomic"]

# Python offers no way to read the umask without setting it; doing that per write would briefly give other
# threads' new files mode 0666, so it is read once, at import
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def fsync_dir(path: str | Path) -> None:
    """Make a rename or a new entry inside the directory ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary path beside ``path``; once the block has written it, move it into place.

    The temporary file has a unique name in the same directory (so the rename is atomic and
    concurrent writers never share it). After the block it is fsynced and renamed over ``path``,
    and the directory is fsynced; if anything fails it is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:  # name the file the user asked for, not the temporary one
        raise OSError(exc.errno, exc.strerror, str(path)) from None
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        # mkstemp creates the file private (0600); the result gets the mode a plain open() would give it:
        # the replaced file's, else the umask's
        os.chmod(tmp, _mode_for(path))
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _mode_for(path: Path) -> int:
    """The permission bits a new file at ``path`` would get: those of the file it replaces, else 0666 less the umask."""
    try:
        return path.stat().st_mode & 0o777
    except FileNotFoundError:
        return 0o666 & ~_UMASK


def write_atomic(path: str | Path, data: str | bytes) -> None:
    """Write ``data`` (text as UTF-8) to ``path`` so that it appears complete or not at all."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    with replacing(path) as tmp, open(tmp, "wb") as fh:
        fh.write(payload)
        fh.flush()


def write_folder_atomic(final: str | Path, files: Mapping[str, str | bytes]) -> None:
    """Create the folder ``final`` holding ``files`` (relative path -> text or bytes), all of them or none.

    The files are written and fsynced in a uniquely named temporary folder beside ``final``, which is
    then renamed into place; a failure removes the temporary folder. ``final`` must not exist yet.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        for rel, data in files.items():
            target = tmp / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "wb") as fh:
                fh.write(data.encode("utf-8") if isinstance(data, str) else data)
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, final)
        fsync_dir(final.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
