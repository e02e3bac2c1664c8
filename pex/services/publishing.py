"""Which policy version is live: publish and roll back, recorded with who did it."""

from __future__ import annotations

import getpass
import socket

from pex.store.releases import Release
from pex.store.workspace import Workspace


def local_actor() -> str:
    """Who is at this terminal, as ``user@host``."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (containers)
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def publish(ws: Workspace, name: str, version: int | None = None, actor: str | None = None,
            note: str | None = None) -> Release:
    """Make ``version`` of policy ``name`` live; servers switch to it within seconds. The default is the newest version,
    unless a run stored it beside an earlier run's recommendation of that policy (a re-run without ``--reason``,
    :mod:`pex.services.history`): then the version that run recommends. ``note`` goes into the audit trail with the
    event (the UI records there that an uncertified policy was published on purpose, and by whom)."""
    return ws.publish(name, version, actor or local_actor(), note)


def rollback(ws: Workspace, name: str, actor: str | None = None, note: str | None = None) -> Release:
    """Return policy ``name`` to the version live before the current one."""
    return ws.rollback(name, actor or local_actor(), note)


def uncertified_note(actor: str) -> str:
    """The audit trail's note on a publish of a policy its run did not certify, confirmed on purpose by ``actor``."""
    return f"uncertified: confirmed by {actor} in the UI"
