"""A spec dict written as the TOML file ``load_spec`` reads (tomli-w does the quoting, so any column name is safe).

The keys come out in the README's order (name, description, owner, data, unit, arm, control, features, propensity,
then ``[allocation]`` and one ``[metrics.<name>]`` table per metric), so a written spec reads like a hand-written one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import tomli_w

from pex.names import printable

__all__ = ["spec_to_toml"]

_TOP_ORDER = ("name", "description", "owner", "oncall", "data", "unit", "arm", "control", "features", "propensity",
              "max_age_days")
_METRIC_ORDER = ("column", "goal", "role", "pre", "max_harm", "max_harm_abs", "weight", "description")


def spec_to_toml(spec: Mapping[str, Any], comments: Iterable[str] = ()) -> str:
    """The TOML text of ``spec`` (a dict in the TOML shape), with ``comments`` as ``#`` lines at the top.

    Keys whose value is None are left out (TOML has no null); unknown keys are kept after the known ones, so that
    loading the text reports them as the spec check would.
    """
    top = {k: spec[k] for k in _TOP_ORDER if spec.get(k) is not None}
    top.update({k: v for k, v in spec.items() if k not in (*_TOP_ORDER, "allocation", "metrics") and v is not None})
    if spec.get("allocation"):
        top["allocation"] = dict(spec["allocation"])
    metrics = spec.get("metrics")
    if isinstance(metrics, Mapping):
        top["metrics"] = {
            name: {**{k: entry[k] for k in _METRIC_ORDER if entry.get(k) is not None},
                   **{k: v for k, v in entry.items() if k not in _METRIC_ORDER and v is not None}}
            if isinstance(entry, Mapping) else entry
            for name, entry in metrics.items()
        }
    elif metrics is not None:
        top["metrics"] = metrics
    # a comment is one line: a line break in it would end the comment and start TOML
    head = "".join(f"# {printable(line)}\n" for line in comments)
    return head + tomli_w.dumps(top)
