"""The stored effect model as ONNX nodes: each booster's prediction and each (metric, arm) effect, in double.

Used only to export value policies (:mod:`pex.policy.onnx`); serving never imports it (it needs onnx and
onnxmltools).

Each LightGBM booster is converted by ``onnxmltools.convert_lightgbm``, which gives the tree structure
(nodes, split modes, children, categorical sets unfolded into chains of equality tests). Three things are
then corrected so that the graph predicts what LightGBM predicts, to the last bit where the operators allow:

* **Precision.** The converter writes thresholds and leaf values as float32 attributes and ONNX's
  TreeEnsembleRegressor outputs float32. LightGBM compares and sums in double, and a value policy's score
  bar can sit exactly on a unit's score, so float32 would flip decisions at ties. The thresholds are
  replaced by the booster's own doubles (``nodes_values_as_tensor``), and the ensemble is made to output,
  per tree, the *index* of the leaf reached (an integer, exact in float32); the leaves' double values are
  gathered from a table and summed tree by tree in LightGBM's order (``CumSum``), so the sum is the same
  double LightGBM computes whatever thread count the runtime uses.
* **Missing values.** LightGBM sends a NaN down a numeric split's default side only when the feature had
  missing values in training (``missing_type`` NaN); otherwise it predicts the NaN as 0.0. The converter
  approximates the latter; here each split's missing direction is set to where LightGBM's rule sends it.
  A NaN in a categorical split always goes right (LightGBM 4), as does an unseen category.
* **Output transform.** Binary boosters predict ``1 / (1 + exp(-sigmoid * raw))`` as LightGBM does, in
  double (the runtime's ``exp`` may differ from the C library's in the last bit).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import lightgbm as lgb
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from pex.errors import PexError
from pex.hte.model import EffectModel

ML_DOMAIN = "ai.onnx.ml"
OPSET = 18  # the default domain: widely served (onnxruntime >= 1.14)
ML_OPSET = 3  # TreeEnsembleRegressor with double thresholds (nodes_values_as_tensor)
CONVERTER_OPSET = 15  # the newest default-domain opset onnxmltools 1.16 converts to; only its tree node is kept
MAX_EXACT_LEAF = 2**24  # leaf indices travel as float32 tree outputs: exact up to here


@dataclass
class GraphBuilder:
    """Nodes and constants of one ONNX graph under construction, with unique value names."""

    prefix: str = "pex/"
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    initializers: list[onnx.TensorProto] = field(default_factory=list)
    _count: int = 0

    def name(self, hint: str) -> str:
        """A new value name (every internal name starts with ``prefix``, so input and output names stay free)."""
        self._count += 1
        return f"{self.prefix}{hint}.{self._count}"

    def const(self, value: Any, hint: str = "const", dtype: Any = np.float64) -> str:
        """A constant tensor (an initializer) holding ``value``; returns its name."""
        name = self.name(hint)
        array = value if isinstance(value, np.ndarray) else np.asarray(value, dtype=dtype)
        if array.dtype.kind in "OUS":
            tensor = helper.make_tensor(name, TensorProto.STRING, array.shape, [str(v).encode() for v in array.ravel()])
        else:
            tensor = numpy_helper.from_array(array, name)
        self.initializers.append(tensor)
        return name

    def op(self, op_type: str, inputs: list[str], hint: str | None = None, n_outputs: int = 1, domain: str = "",
           **attributes: Any) -> str:
        """Append one node; returns its (first) output's name."""
        outputs = [self.name(hint or op_type.lower()) for _ in range(n_outputs)]
        self.nodes.append(helper.make_node(op_type, inputs, outputs, name=self.name(op_type), domain=domain, **attributes))
        return outputs[0]

    def rows_like(self, column: str, width: int, value: float = 0.0) -> str:
        """A double tensor of shape (rows of ``column``, ``width``) filled with ``value``."""
        rows = self.op("Slice", [self.op("Shape", [column]), self.const([0], "zero", np.int64), self.const([1], "one", np.int64)])
        shape = self.op("Concat", [rows, self.const([width], "width", np.int64)], axis=0)
        return self.op("ConstantOfShape", [shape], value=numpy_helper.from_array(np.array([value], dtype=np.float64)))


def effect_outputs(g: GraphBuilder, model: EffectModel, X: str, wanted: set[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """Nodes computing ``model.effect`` of the encoded matrix ``X`` (double, (n, n_features)) for the
    (metric, arm) pairs in ``wanted``; returns each pair's (n, 1) double value name.

    The same operations in the same order as :meth:`EffectModel.effect`: per pair, the weighted terms
    summed in recipe order, a term with an ``arm`` reading ``X`` with the S-learner's arm columns appended.
    """
    treated = model.treated_arms
    predictions: dict[tuple[str, str | None], str] = {}
    inputs: dict[str | None, str] = {None: X}
    out = {}
    for metric in model.metrics:
        for arm in treated:
            if (metric, arm) not in wanted:
                continue
            total = None
            for term in model.recipes[metric][arm]:
                key = (term["model"], term.get("arm"))
                if key not in predictions:
                    if key[1] not in inputs:
                        inputs[key[1]] = _with_arm(g, X, treated, key[1])
                    predictions[key] = booster_output(g, model.boosters[key[0]], inputs[key[1]], key[0])
                product = g.op("Mul", [g.const(float(term["weight"]), "weight"), predictions[key]], "term")
                # numpy starts from zeros: 0.0 + x is x (but -0.0), so the first term is the total as it is
                total = product if total is None else g.op("Add", [total, product], f"effect_{metric}_{arm}")
            out[(metric, arm)] = total if total is not None else g.rows_like(X, 1)
    return out


def _with_arm(g: GraphBuilder, X: str, treated: list[str], arm: str) -> str:
    """``X`` with the S-learner's arm indicator columns (:func:`pex.hte.model.with_arm`)."""
    onehot = np.zeros((1, len(treated)))
    if arm in treated:
        onehot[0, treated.index(arm)] = 1.0
    zeros = g.rows_like(X, len(treated))
    return g.op("Concat", [X, g.op("Add", [zeros, g.const(onehot, "onehot")])], f"input_{arm}", axis=1)


def booster_output(g: GraphBuilder, booster: lgb.Booster, X: str, label: str) -> str:
    """Nodes computing ``booster.predict(X)`` (double, shape (n, 1)) from the double matrix ``X``."""
    dump = booster.dump_model()
    objective = str(dump.get("objective", "regression")).split()
    if dump.get("num_tree_per_iteration", 1) != 1 or objective[0] not in ("regression", "binary"):
        raise PexError(f"booster {label!r} has objective {' '.join(objective)!r}, which the ONNX export does not handle",
                       "pex trains regression and binary boosters; refit with this pex version")
    ensemble = _converted_ensemble(booster)
    leaves = _exact_ensemble(ensemble, dump, label)
    tree_count = len(dump["tree_info"])
    trees = g.op("TreeEnsembleRegressor", [X], "leaf_of_tree", domain=ML_DOMAIN, **ensemble)
    index = g.op("Cast", [trees], "leaf_index", to=TensorProto.INT32)  # Gather takes int32: half the memory
    values = g.op("Gather", [g.const(leaves, "leaf_values"), index], "leaf_value")
    running = g.op("CumSum", [values, g.const(1, "axis", np.int64)], "running_sum")  # tree 0, then + tree 1, ...
    raw = g.op("Slice", [running, g.const([tree_count - 1], "last", np.int64), g.const([tree_count], "end", np.int64),
                         g.const([1], "axis", np.int64)], "raw")
    if objective[0] == "regression":
        return raw
    sigmoid = next((float(p.split(":", 1)[1]) for p in objective[1:] if p.startswith("sigmoid:")), 1.0)
    exp = g.op("Exp", [g.op("Mul", [raw, g.const(-sigmoid, "minus_sigmoid")])])
    return g.op("Div", [g.const(1.0, "one"), g.op("Add", [g.const(1.0, "one"), exp])], "probability")


def _converted_ensemble(booster: lgb.Booster) -> dict[str, Any]:
    """The attributes of the tree node ``onnxmltools.convert_lightgbm`` makes of ``booster``."""
    from onnxmltools import convert_lightgbm
    from onnxmltools.convert.common.data_types import FloatTensorType

    converted = convert_lightgbm(booster, initial_types=[("X", FloatTensorType([None, booster.num_feature()]))],
                                 zipmap=False, target_opset=CONVERTER_OPSET)
    tree_nodes = [n for n in converted.graph.node if n.op_type in ("TreeEnsembleRegressor", "TreeEnsembleClassifier")]
    if len(tree_nodes) != 1:
        raise PexError(f"onnxmltools made {len(tree_nodes)} tree nodes of one booster, not 1",
                       "this onnxmltools version is not one the export knows; install onnxmltools 1.16")
    attributes = {a.name: helper.get_attribute_value(a) for a in tree_nodes[0].attribute}
    # the classifier's leaves (binary boosters) are the regressor's targets
    return {key.replace("class_", "target_"): value for key, value in attributes.items()}


def _exact_ensemble(attributes: dict[str, Any], dump: dict, label: str) -> np.ndarray:
    """Rewrite the converted tree node in place into the exact form (module docstring); returns the table of
    leaf values (double) that the node's outputs index."""
    position = {(t, n): i for i, (t, n) in enumerate(zip(attributes["nodes_treeids"], attributes["nodes_nodeids"]))}
    modes = [m.decode() if isinstance(m, bytes) else m for m in attributes["nodes_modes"]]
    features, true_ids, false_ids = attributes["nodes_featureids"], attributes["nodes_truenodeids"], attributes["nodes_falsenodeids"]
    thresholds = np.zeros(len(modes))
    tracks_true = [0] * len(modes)
    leaf_of: dict[tuple[int, int], int] = {}
    leaf_values: list[float] = []

    def mismatch(what: str) -> PexError:
        return PexError(f"the ONNX tree onnxmltools made of booster {label!r} does not match LightGBM's ({what})",
                        "this onnxmltools version is not one the export knows; install onnxmltools 1.16")

    def walk(tree: int, node: int, split: dict) -> None:
        stack = [(node, split)]
        while stack:
            node, split = stack.pop()
            i = position[(tree, node)]
            if "split_feature" not in split:  # a leaf
                if modes[i] != "LEAF":
                    raise mismatch("a leaf is a split")
                if (tree, node) not in leaf_of:
                    leaf_of[(tree, node)] = len(leaf_values)
                    leaf_values.append(float(split["leaf_value"]))
                continue
            if features[i] != split["split_feature"]:
                raise mismatch("split features differ")
            if split["decision_type"] == "<=":
                if modes[i] != "BRANCH_LEQ":
                    raise mismatch("a numeric split is not BRANCH_LEQ")
                threshold = float(split["threshold"])
                thresholds[i] = threshold
                if split["missing_type"] == "NaN":
                    tracks_true[i] = int(bool(split["default_left"]))
                elif split["missing_type"] == "None":
                    tracks_true[i] = int(0.0 <= threshold)  # LightGBM predicts a NaN as 0.0 here
                else:
                    raise PexError(f"booster {label!r} treats zeros as missing, which the ONNX export does not handle",
                                   "pex trains without zero_as_missing; refit with this pex version")
                stack += [(true_ids[i], split["left_child"]), (false_ids[i], split["right_child"])]
                continue
            # a categorical split: "c1||c2||..." goes left; the converter chains one equality test per category
            categories = [float(c) for c in str(split["threshold"]).split("||")]
            left = true_ids[i]
            for k, category in enumerate(categories):
                if modes[i] != "BRANCH_EQ" or features[i] != split["split_feature"] or true_ids[i] != left:
                    raise mismatch("a category set is not a chain of equality tests")
                thresholds[i] = category
                tracks_true[i] = 0  # NaN (missing or unseen category) goes right
                if k < len(categories) - 1:
                    i = position[(tree, false_ids[i])]
            stack += [(left, split["left_child"]), (false_ids[i], split["right_child"])]

    for tree, info in enumerate(dump["tree_info"]):
        walk(tree, 0, info["tree_structure"])
    target_nodes = list(zip(attributes["target_treeids"], attributes["target_nodeids"]))
    if sorted(target_nodes) != sorted(leaf_of) or set(attributes["nodes_treeids"]) != set(range(len(dump["tree_info"]))):
        raise mismatch("leaves differ")
    if len(leaf_values) >= MAX_EXACT_LEAF:
        raise PexError(f"booster {label!r} has {len(leaf_values):,} leaves, too many to export",
                       f"the export handles up to {MAX_EXACT_LEAF:,}")
    for key in [k for k in attributes if k.startswith("target_") or k in ("nodes_values", "nodes_hitrates", "classlabels_int64s",
                                                                              "classlabels_strings", "base_values")]:
        del attributes[key]
    attributes.update(
        nodes_modes=modes, nodes_values_as_tensor=numpy_helper.from_array(thresholds, "thresholds"),
        nodes_missing_value_tracks_true=tracks_true, n_targets=len(dump["tree_info"]), post_transform="NONE",
        aggregate_function="SUM", target_treeids=[t for t, _ in target_nodes], target_nodeids=[n for _, n in target_nodes],
        target_ids=[t for t, _ in target_nodes], target_weights=[float(leaf_of[key]) for key in target_nodes],
    )
    attributes.pop("name", None)
    return np.asarray(leaf_values, dtype=np.float64)
