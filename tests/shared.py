"""What tests share besides fixtures: result and workspace helpers that tests/conftest.py's fixtures build and test
modules import (``from tests.shared import ...``): importing them from ``conftest`` would pick whichever conftest.py
was loaded last under that module name."""

from __future__ import annotations

import hashlib
from pathlib import Path

N_UNITS = 20_000  # units of the shared 20k pipeline fixtures


class CliResult:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    def __repr__(self) -> str:
        return f"CliResult(code={self.code}, err={self.err!r}, out={self.out[:300]!r})"


def snapshot(directory: Path) -> dict[str, str]:
    """Every file under ``directory`` with the sha256 of its bytes."""
    if not directory.exists():
        return {}
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*")) if p.is_file()
    }


class Served:
    """A workspace with a published tree, value, constant and routing policy and one token per scope, for serving tests."""

    def __init__(self, home: Path) -> None:
        from pex.store.workspace import Workspace

        self.home = home
        with Workspace(home) as ws:
            policies = ws.list_policies("exp")
            # pex run's policies are cross-fitted (routing); their first routes, stored on their own, are plain kinds
            self.routing = next(p.name for p in policies if p.kind == "routing" and p.name.endswith("-tree-d3"))
            value = next(p for p in policies if p.kind == "routing" and p.name.endswith("-value"))
            routes = [ws.get_policy(name).document["routing"]["routes"][0]["policy"] for name in (self.routing, value.name)]
            stored = ws.put_policies("exp", [(doc, None) for doc in routes], fit_id=value.fit_id)
            self.tree, self.value = (r.name for r in stored)
            self.constant = next(p.name for p in policies if p.kind == "constant")
            for name in (self.tree, self.value, self.constant, self.routing):
                ws.publish(name, None, "tests")
            self.admin = ws.create_token("admin", "test-admin")[1]
            self.decide = ws.create_token("decide", "test-decide")[1]

    def headers(self, scope: str = "decide") -> dict[str, str]:
        """Authorization headers with the token of ``scope``."""
        return {"Authorization": f"Bearer {self.admin if scope == 'admin' else self.decide}"}
