"""A policy as one SQL expression giving each row's greedy arm (``pex export POLICY --format sql``).

For a warehouse to assign arms in a query. Constant and tree policies have an SQL form; a value policy needs
its effect models (export it as ONNX, :mod:`pex.policy.onnx`, or distil a tree from it) and a routing policy
the keyed hash of unit ids, which SQL cannot compute. Exploration is not applied: a query cannot log
propensities.

Names are data, never code (issue 24): column names are quoted identifiers and labels quoted string literals,
whatever they hold, so a name cannot end the expression or start another statement, even in a document stored
before pex refused control characters in names (:mod:`pex.names`). Quoting is standard SQL (DuckDB, PostgreSQL,
SQLite): a dialect that reads a backslash inside a string literal as an escape (MySQL by default, BigQuery,
Snowflake) reads a label holding a backslash differently.
"""

from __future__ import annotations

import math

from pex.policy.base import Policy, PolicyError
from pex.policy.constant import ConstantPolicy
from pex.policy.routing import RoutingPolicy
from pex.policy.tree import TreePolicy


def policy_sql(policy: Policy) -> str:
    """The greedy arm of ``policy`` as one SQL expression over the feature columns (module docstring)."""
    if isinstance(policy, ConstantPolicy):
        return sql_string(policy.default_arm)
    if isinstance(policy, TreePolicy):
        return tree_sql(policy.tree)
    if isinstance(policy, RoutingPolicy):
        raise PolicyError(f"policy {policy.name!r} routes units by a keyed hash of their id, which SQL cannot compute",
                          "export one route: `--format json` shows the routes' documents; save one to a file and export "
                          "that file, or serve the policy with `pex serve`")
    raise PolicyError(f"policy {policy.name!r} is a {policy.kind} policy, which has no SQL form",
                      "SQL export covers constant and tree policies; export it with --format onnx, "
                      "or distil a tree from it (`pex policies NAME`)")


def tree_sql(tree: dict) -> str:
    """Nested ``CASE WHEN test THEN left ELSE right END``, with the semantics of :class:`pex.policy.tree.TreePolicy`.

    Missing values are SQL NULLs and take the node's ``missing`` side: the test reads ``(x IS NULL OR x <= v)``
    when missing goes left and ``(x IS NOT NULL AND x <= v)`` when it goes right, so each subtree is written
    once. Category tests compare the column cast to text, so category columns should hold text labels.
    """
    if "arm" in tree:
        return sql_string(tree["arm"])
    column = sql_identifier(tree["feature"])
    if tree["op"] == "<=":
        test = f"{column} <= {sql_number(tree['value'])}"
    else:
        test = f"CAST({column} AS VARCHAR) IN ({', '.join(sql_string(str(v)) for v in tree['value'])})"
    if tree.get("missing", "right") == "left":
        test = f"({column} IS NULL OR {test})"
    else:
        test = f"({column} IS NOT NULL AND {test})"
    return f"CASE WHEN {test} THEN {tree_sql(tree['left'])} ELSE {tree_sql(tree['right'])} END"


def sql_string(text: str) -> str:
    """``text`` as an SQL string literal (single quotes doubled), so a quote, semicolon, ``--`` or line break in a
    label stays inside the literal. NUL has no place in SQL text (PostgreSQL refuses it, C clients truncate at it):
    a label holding one is refused, never written raw."""
    return "'" + _no_nul(str(text), "a label").replace("'", "''") + "'"


def sql_identifier(name: str) -> str:
    """``name`` as a quoted SQL identifier (double quotes doubled), so any column name is safe (NUL is refused, as in
    :func:`sql_string`)."""
    return '"' + _no_nul(str(name), "a column name").replace('"', '""') + '"'


def _no_nul(text: str, what: str) -> str:
    if "\x00" in text:
        raise PolicyError(f"{what} holds a NUL (U+0000), which SQL text cannot hold: {text!r}",
                          "names are data: rebuild the policy from data without NUL characters, or export it as JSON")
    return text


def sql_number(value: float) -> str:
    """A finite threshold as an SQL numeric literal that reads back as the same double."""
    number = float(value)
    if not math.isfinite(number):
        raise PolicyError(f"threshold {value!r} has no SQL form", "tree thresholds must be finite numbers")
    return repr(number)
