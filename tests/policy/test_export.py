"""Policies exported as SQL assign exactly pex's greedy arms when a real SQL engine (DuckDB) runs them."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from pex.cli.main import main
from pex.experiment.simulate import simulate
from pex.policy.base import Policy
from pex.policy.constant import constant_policy
from pex.policy.sql import policy_sql

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "policies" / "notification_cadence-tree-example.json"
ARMS = ["control", "daily", "weekly"]
N = 100_000


@pytest.fixture(scope="module")
def units() -> pd.DataFrame:
    """100,000 simulated units with holes: missing numbers and labels, and a country no tree has seen."""
    frame = simulate(N, seed=11).data[["user_id", "age", "tenure_days", "country", "platform"]].copy()
    rng = np.random.default_rng(5)
    for column in ("age", "tenure_days"):
        frame.loc[rng.random(N) < 0.1, column] = np.nan
    frame["country"] = frame["country"].astype(object)
    frame.loc[rng.random(N) < 0.1, "country"] = None
    frame.loc[rng.random(N) < 0.05, "country"] = "ZZ"
    return frame


def run_sql(expression: str, frame: pd.DataFrame) -> np.ndarray:
    """``SELECT expression AS arm`` over ``frame`` as a DuckDB table (pandas NaN and None arrive as NULL)."""
    with duckdb.connect() as db:
        db.register("units", frame)
        return db.sql(f"SELECT {expression} AS arm FROM units").df()["arm"].to_numpy(dtype=object)


def sql_arms(policy: Policy, frame: pd.DataFrame) -> np.ndarray:
    return run_sql(policy_sql(policy), frame)


def pex_arms(policy: Policy, frame: pd.DataFrame) -> np.ndarray:
    return np.asarray(policy.arms, dtype=object)[policy.greedy_arms(frame)]


def test_the_example_tree_assigns_the_same_arms_in_sql(units):
    policy = Policy.from_document(json.loads(EXAMPLE.read_text()))
    assert units[["age", "tenure_days", "country"]].isna().any().all()
    np.testing.assert_array_equal(sql_arms(policy, units), pex_arms(policy, units))


def _random_tree(rng: np.random.Generator, depth: int) -> dict:
    if depth == 0 or rng.random() < 0.15:
        return {"arm": str(rng.choice(ARMS))}
    node: dict = {"missing": str(rng.choice(["left", "right"]))}
    if rng.random() < 0.5:
        feature = str(rng.choice(["age", "tenure_days"]))
        node.update(feature=feature, op="<=", value=float(np.round(rng.uniform(0, 400 if feature == "tenure_days" else 70), 1)))
    else:
        feature = str(rng.choice(["country", "platform"]))
        labels = ["US", "IN", "BR", "DE", "GB", "FR"] if feature == "country" else ["ios", "android", "web"]
        node.update(feature=feature, op="in", value=sorted(rng.choice(labels, size=rng.integers(1, 3), replace=False).tolist()))
    node.update(left=_random_tree(rng, depth - 1), right=_random_tree(rng, depth - 1))
    return node


@pytest.mark.parametrize("seed", range(20))
def test_random_trees_assign_the_same_arms_in_sql(units, seed):
    rng = np.random.default_rng(seed)
    policy = Policy.from_document({"format": "pex.policy/1", "name": f"random-{seed}", "kind": "tree", "arms": ARMS,
                                   "default_arm": "control", "exploration": 0.05, "tree": _random_tree(rng, 6)})
    np.testing.assert_array_equal(sql_arms(policy, units), pex_arms(policy, units))


def test_constant_policies_and_awkward_names():
    frame = pd.DataFrame({'odd "name"': [1.0, None, 5.0]})
    assert list(sql_arms(constant_policy(["a", "it's"], "it's"), frame)) == ["it's"] * 3
    policy = Policy.from_document({"format": "pex.policy/1", "name": "odd", "kind": "tree", "arms": ["a", "it's"],
                                   "default_arm": "a", "tree": {"feature": 'odd "name"', "op": "<=", "value": 2,
                                                                "missing": "left", "left": {"arm": "it's"},
                                                                "right": {"arm": "a"}}})
    assert list(sql_arms(policy, frame)) == list(pex_arms(policy, frame)) == ["it's", "it's", "a"]


def test_pex_export_writes_sql_and_json(tmp_path, capsys):
    out = tmp_path / "tree.sql"
    assert main(["--home", str(tmp_path / "ws"), "export", str(EXAMPLE), "--format", "sql", "--out", str(out)]) == 0
    text = out.read_text()
    assert text.startswith("-- pex policy notification_cadence-tree-example v1") and "Exploration (0.05) is not applied" in text
    expression = "\n".join(line for line in text.splitlines() if not line.startswith("--"))
    frame = simulate(2000, seed=3).data
    arms = run_sql(expression, frame)
    np.testing.assert_array_equal(arms, pex_arms(Policy.from_document(json.loads(EXAMPLE.read_text())), frame))
    assert not (tmp_path / "ws").exists()  # a policy file needs no workspace
    capsys.readouterr()
    assert main(["--home", str(tmp_path / "ws"), "export", str(EXAMPLE), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == Policy.from_document(json.loads(EXAMPLE.read_text())).to_document()
