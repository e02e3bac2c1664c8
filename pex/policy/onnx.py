"""A policy as one ONNX graph that gives each row its greedy arm (``pex export POLICY --format onnx``).

Inputs are the raw features, one ``[N, 1]`` tensor per feature, named as the feature: ``tensor(double)``
for a numeric feature (NaN is missing) and ``tensor(string)`` for a categorical one (a missing label is
the empty string). Outputs:

* ``arm`` (``tensor(string)``, ``[N]``): each row's greedy arm, what :meth:`Policy.greedy_arms` gives;
* ``arm_index`` (``tensor(int64)``, ``[N]``): its position in the policy's ``arms``;
* ``scores`` (``tensor(double)``, ``[N, n_arms]``, value policies only): each arm's score, control's
  being ``min_score`` (:meth:`pex.policy.value.ValuePolicy.scores`).

A **value policy**'s graph encodes the features as :class:`pex.experiment.features.FeatureEncoder` does
(a category becomes its code, an unseen or missing one NaN), predicts every booster its coefficients need
(:mod:`pex.hte.onnx_graph`, in double), sums the effects and scores as :mod:`pex.policy.value` does and
takes the first arm with the highest score (control scoring ``min_score``), as
:func:`pex.policy.value.choose_arms` breaks ties. Labels are matched exactly: pex trims surrounding
whitespace from category labels before matching, the graph does not, so trim them before feeding it.

A **tree policy**'s graph makes the tree's tests (a numeric NaN and an empty label take the node's
``missing`` side).

Exploration is not applied: the graph gives the greedy arm. Serve with ``pex decide`` to draw exploration
and log propensities. The model's ``metadata_props`` carry the policy's name, version, arms and inputs.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper

from pex.errors import PexError
from pex.hte.onnx_graph import ML_DOMAIN, ML_OPSET, OPSET, GraphBuilder, effect_outputs
from pex.policy.base import Policy
from pex.policy.tree import TreePolicy
from pex.policy.value import ValuePolicy
from pex.version import __version__

FORMAT = "pex.onnx/1"
IR_VERSION = 8  # what opset 18 needs; older onnxruntime releases read it too
OUTPUTS = ("arm", "arm_index", "scores")


def policy_onnx(policy: Policy) -> onnx.ModelProto:
    """The ONNX model of a value or tree policy (module docstring); a constant policy needs none."""
    if isinstance(policy, ValuePolicy):
        return value_policy_onnx(policy)
    if isinstance(policy, TreePolicy) and policy.features:
        return tree_policy_onnx(policy)
    if policy.kind == "routing":
        raise PexError(f"policy {policy.name!r} routes units by a keyed hash of their id, which ONNX has no operator for",
                       "export one route: `--format json` shows the routes' documents; save one to a file and export that file")
    raise PexError(f"policy {policy.name!r} ({policy.description}) reads no feature, so it has no ONNX form",
                   "export it with --format sql (a constant) or --format json")


def value_policy_onnx(policy: ValuePolicy) -> onnx.ModelProto:
    """A value policy's encoding, boosters, coefficients and decision rule as one graph."""
    model = policy._bound()
    encoder = model.encoder
    g = GraphBuilder()
    inputs, columns = [], []
    for column in encoder.columns:
        if encoder.kinds[column] == "numeric":
            inputs.append(helper.make_tensor_value_info(column, TensorProto.DOUBLE, ["N", 1]))
            columns.append(column)
        else:
            inputs.append(helper.make_tensor_value_info(column, TensorProto.STRING, ["N", 1]))
            levels = encoder.categories[column]
            if not levels:  # never seen with a label in training: always missing
                columns.append(g.rows_like(column, 1, float("nan")))
                continue
            # the code FeatureEncoder gives; any other label (unseen, or "" for missing) becomes NaN
            code = g.op("LabelEncoder", [column], f"code_{column}", domain=ML_DOMAIN, keys_strings=levels,
                        values_floats=[float(i) for i in range(len(levels))], default_float=float("nan"))
            columns.append(g.op("Cast", [code], f"encoded_{column}", to=TensorProto.DOUBLE))
    X = g.op("Concat", columns, "X", axis=1) if len(columns) > 1 else columns[0]

    vm = policy.value_model
    metrics = {m: float(meta["coefficient"]) for m, meta in vm["metrics"].items()}
    wanted = {(m, a) for m, c in metrics.items() if c != 0.0 for a in model.treated_arms}
    effects = effect_outputs(g, model, X, wanted)
    by_arm = []
    for arm in policy.arms:
        if arm == policy.default_arm:
            by_arm.append(g.rows_like(X, 1, float(vm["min_score"])))
            continue
        score = None  # as pex.policy.value.arm_scores: metrics in the document's order, zero coefficients left out
        for metric, c in metrics.items():
            if c != 0.0:
                term = g.op("Mul", [g.const(c, "coefficient"), effects[(metric, arm)]], f"score_{arm}")
                score = term if score is None else g.op("Add", [score, term], f"score_{arm}")
        by_arm.append(score if score is not None else g.rows_like(X, 1))
    scores = g.op("Concat", by_arm, "scores", axis=1)
    g.nodes.append(helper.make_node("Identity", [scores], ["scores"], name=g.name("scores")))
    # ArgMax takes the first of equal maxima: choose_arms' "ties to the first arm"
    index = g.op("ArgMax", [scores], "arm_index", axis=1, keepdims=0, select_last_index=0)
    outputs = [helper.make_tensor_value_info("scores", TensorProto.DOUBLE, ["N", len(policy.arms)])]
    return _finish(policy, g, inputs, index, outputs, {
        "pex.min_score": repr(float(vm["min_score"])),
        "pex.categories": json.dumps(encoder.categories),
        "pex.coefficients": json.dumps(metrics),
    })


def tree_policy_onnx(policy: TreePolicy) -> onnx.ModelProto:
    """A tree policy's tests as one graph of ``Where`` nodes, leaves up."""
    g = GraphBuilder()
    categorical = set(policy.categorical_features())
    numeric = {f for f in policy.features if "<=" in policy._ops(f)}
    both = sorted(categorical & numeric)
    if both:
        raise PexError(f"tree policy {policy.name!r} tests feature {both[0]!r} both as a number and as a category",
                       "an ONNX input has one type; export it with --format sql")
    inputs = [helper.make_tensor_value_info(f, TensorProto.STRING if f in categorical else TensorProto.DOUBLE, ["N", 1])
              for f in policy.features]
    flat = {f: g.op("Reshape", [f, g.const([-1], "flat", np.int64)], f"flat_{f}") for f in policy.features}
    missing_numbers = {f: g.op("IsNaN", [flat[f]], f"missing_{f}") for f in numeric}
    index = {a: i for i, a in enumerate(policy.arms)}

    def expression(node: dict) -> str:
        if "arm" in node:
            return g.const(index[node["arm"]], f"arm_{node['arm']}", np.int64)
        feature = node["feature"]
        if node["op"] == "<=":
            test, missing = g.op("LessOrEqual", [flat[feature], g.const(float(node["value"]), "threshold")]), missing_numbers[feature]
        else:
            # 1 for a listed label, 2 for the empty label (missing, unless it is listed), 0 for any other
            keys = list(dict.fromkeys(node["value"]))
            values = [1] * len(keys) + ([] if "" in keys else [2])
            code = g.op("LabelEncoder", [flat[feature]], f"labels_{feature}", domain=ML_DOMAIN,
                        keys_strings=keys + ([] if "" in keys else [""]), values_int64s=values, default_int64=0)
            test = g.op("Equal", [code, g.const(1, "listed", np.int64)])
            missing = g.op("Equal", [code, g.const(2, "empty", np.int64)])
        if node.get("missing", "right") == "left":
            goes_left = g.op("Or", [missing, test], "goes_left")
        else:
            goes_left = g.op("And", [g.op("Not", [missing]), test], "goes_left")
        return g.op("Where", [goes_left, expression(node["left"]), expression(node["right"])], "arm_index")

    return _finish(policy, g, inputs, expression(policy.tree), [], {})


def _finish(policy: Policy, g: GraphBuilder, inputs: list, index: str, outputs: list, metadata: dict[str, str]) -> onnx.ModelProto:
    """Add the ``arm_index`` and ``arm`` outputs and the metadata; check the model."""
    taken = [i.name for i in inputs if i.name in OUTPUTS or i.name.startswith(g.prefix)]
    if taken:
        raise PexError(f"feature {taken[0]!r} has a name the ONNX graph uses for itself",
                       f"rename the feature: {', '.join(OUTPUTS)} and names starting with {g.prefix!r} are the graph's")
    g.nodes.append(helper.make_node("Identity", [index], ["arm_index"], name=g.name("arm_index")))
    g.nodes.append(helper.make_node("LabelEncoder", ["arm_index"], ["arm"], name=g.name("arm"), domain=ML_DOMAIN,
                                    keys_int64s=list(range(len(policy.arms))), values_strings=list(policy.arms),
                                    default_string=""))
    outputs = [helper.make_tensor_value_info("arm", TensorProto.STRING, ["N"]),
               helper.make_tensor_value_info("arm_index", TensorProto.INT64, ["N"]), *outputs]
    features = [{"name": i.name, "type": "string" if i.type.tensor_type.elem_type == TensorProto.STRING else "double"}
                for i in inputs]
    graph = helper.make_graph(g.nodes, _graph_name(policy), inputs, outputs, initializer=g.initializers,
                              doc_string=_doc_string(policy, features))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(ML_DOMAIN, ML_OPSET)],
                              producer_name="pex", producer_version=__version__, ir_version=IR_VERSION,
                              doc_string=graph.doc_string)
    props: dict[str, Any] = {
        "pex.format": FORMAT, "pex.policy.name": policy.name, "pex.policy.version": str(policy.version),
        "pex.policy.kind": policy.kind, "pex.policy.experiment": policy.experiment, "pex.arms": json.dumps(policy.arms),
        "pex.default_arm": policy.default_arm, "pex.features": json.dumps(features),
        "pex.exploration": repr(float(policy.exploration)), "pex.exploration_applied": "false",
        **metadata, "pex.policy.document": policy.to_json(),
    }
    helper.set_model_props(model, props)
    onnx.checker.check_model(model, full_check=True)
    return model


def _graph_name(policy: Policy) -> str:
    return f"pex policy {policy.name} v{policy.version}"


def _doc_string(policy: Policy, features: list[dict]) -> str:
    """What the model computes and how to feed it, for whoever opens the file (e.g. in Netron)."""
    listing = ", ".join(f"{f['name']} ({f['type']})" for f in features)
    return (f"pex policy {policy.name} v{policy.version} ({policy.description}): each row's greedy arm.\n"
            f"Inputs, each [N, 1]: {listing}. A numeric feature is double, NaN when missing; a categorical feature is "
            "a string label, '' when missing (labels are matched exactly: trim whitespace first).\n"
            "Outputs: arm (string [N]), arm_index (int64 [N], into pex.arms)"
            + (", scores (double [N, n_arms], control scoring min_score)" if policy.kind == "value" else "") + ".\n"
            f"Exploration ({policy.exploration:g}) is not applied: serve with `pex decide` to log propensities.")
