"""The folder of a `pex serve` process's Prometheus value files: one per server, on tmpfs, never shared.

prometheus-client's multiprocess mode keeps each worker's metric values in memory-mapped files in one folder
(``PROMETHEUS_MULTIPROC_DIR``). Such files must not live in the workspace: when its disk fills up, a write
into a mapped page that the filesystem cannot back kills the worker with SIGBUS, losing its buffered
decisions. So the folder is made in /dev/shm (memory; the values are a few kilobytes per worker) when it is
there and writable, else in the system's temporary folder.

The folder is named after the host and the gunicorn master's pid (`pex serve` execs gunicorn, so that is the
pid of `pex serve` itself): two servers never share one, and a server never touches another's. It is removed
when the server stops (gunicorn's ``on_exit`` hook); a server killed with SIGKILL leaves its folder behind, and
the next `pex serve` on the host removes the folders of masters that are no longer running.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import tempfile
from pathlib import Path

PREFIX = "pex-metrics-"


def base_folder() -> Path:
    """/dev/shm when it exists and this user may write there, else the system temporary folder."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK | os.X_OK):
        return shm
    return Path(tempfile.gettempdir())


def _host() -> str:
    """The host name as a file-name part (containers sharing a /dev/shm have their own names and pid spaces)."""
    return re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname()) or "host"


def folder_for(pid: int, base: Path | None = None) -> Path:
    """The metrics folder of the server whose master has ``pid``."""
    return (base or base_folder()) / f"{PREFIX}{_host()}-{pid}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: running
        return True
    return True


def stale_folders(base: Path | None = None) -> list[Path]:
    """This host's and this user's metrics folders whose master is no longer running."""
    base = base or base_folder()
    pattern = re.compile(re.escape(f"{PREFIX}{_host()}-") + r"(\d+)")
    stale = []
    for entry in base.glob(f"{PREFIX}*"):
        match = pattern.fullmatch(entry.name)
        try:
            mine = entry.is_dir() and not entry.is_symlink() and entry.stat().st_uid == os.getuid()
        except OSError:
            continue
        if match and mine and not _alive(int(match.group(1))):
            stale.append(entry)
    return stale


def prepare(pid: int | None = None, base: Path | None = None) -> Path:
    """Remove the folders of dead masters, then make an empty folder for the master ``pid`` (default: this
    process, which becomes the master by exec) and return it."""
    pid = os.getpid() if pid is None else pid
    for folder in stale_folders(base):
        shutil.rmtree(folder, ignore_errors=True)
    folder = folder_for(pid, base)
    # left by an earlier process that had this pid and was killed: its values are not this server's
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(mode=0o700, parents=True)
    return folder


def remove(folder: str | os.PathLike[str] | None, pid: int | None = None) -> bool:
    """Remove ``folder`` if it is the metrics folder of the master ``pid`` (default: this process); whether it did.
    Anything else (a folder given by hand in PROMETHEUS_MULTIPROC_DIR) is left alone."""
    if not folder:
        return False
    path = Path(folder)
    if path.name != folder_for(os.getpid() if pid is None else pid).name:
        return False
    shutil.rmtree(path, ignore_errors=True)
    return not path.exists()
