"""A policy written out for use outside pex: its JSON document, one SQL expression (constant and tree policies)
or one ONNX graph (value and tree policies)."""

from __future__ import annotations

from collections.abc import Callable

from pex.errors import PexError
from pex.names import printable
from pex.policy.base import Policy
from pex.policy.sql import policy_sql
from pex.services.models import load_policy
from pex.store.workspace import Workspace

FORMATS = ("sql", "json", "onnx")
BINARY_FORMATS = ("onnx",)  # written to a file, never to a terminal


def export_policy(workspace: Callable[[], Workspace], policy_ref: str, fmt: str) -> tuple[str | bytes, Policy]:
    """The text (bytes for ONNX) of a stored policy (or policy file) in ``fmt`` (one of :data:`FORMATS`), and the policy.

    SQL is a ``CASE`` expression giving each row's greedy arm, headed by comments saying which policy it is and
    what it does not do (exploration), e.g. ``SELECT user_id, <expression> AS arm FROM users``. ONNX is a
    serialized model whose inputs are the raw features and whose outputs are each row's greedy arm (and, for a
    value policy, every arm's score): :mod:`pex.policy.onnx`.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    policy, _record = load_policy(workspace, policy_ref)
    if fmt == "json":
        return policy.to_json() + "\n", policy
    if fmt == "onnx":
        return _onnx(policy), policy
    expression = policy_sql(policy)
    # names are data: in a `--` comment a line break would end the comment and start SQL (issue 24), so the header
    # writes every name with its control characters escaped (pex.names.printable), stored documents included
    features = ", ".join(printable(f) for f in policy.features) or "no column"
    header = (f"-- pex policy {printable(policy.name)} v{policy.version} ({printable(policy.description)}): "
              "each row's greedy arm.\n"
              f"-- Reads {features}; missing values are NULL and follow the tree's "
              "declared side; category columns hold text labels.\n"
              f"-- Exploration ({policy.exploration:g}) is not applied: serve with `pex decide` to log propensities.\n")
    return header + expression + "\n", policy


def _onnx(policy: Policy) -> bytes:
    # imported here: onnx and onnxmltools are needed by this export alone, never by serving
    try:
        from pex.policy.onnx import policy_onnx
    except ImportError as exc:
        raise PexError(f"the ONNX export needs the onnx and onnxmltools packages ({exc})",
                       "install them: pip install onnx onnxmltools") from None
    return policy_onnx(policy).SerializeToString()
