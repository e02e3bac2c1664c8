"""docs/operations.md explains every alert rule `pex check` can fire (the rules are defined in pex.monitor.alerts)."""

from __future__ import annotations

from pathlib import Path

from pex.monitor.alerts import RULES

DOC = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


def test_every_alert_rule_has_a_row_in_the_operations_guide():
    rows = {line.split("|")[1].strip().strip("`") for line in DOC.read_text().splitlines()
            if line.startswith("| `")}
    assert set(RULES) <= rows, sorted(set(RULES) - rows)
