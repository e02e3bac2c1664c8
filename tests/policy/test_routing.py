"""The routing policy kind: policies as routes, chosen per unit by a keyed hash of the unit id."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from pex.errors import DataError
from pex.experiment.simulate import simulate
from pex.experiment.split import evaluation_mask, hash_interval_mask, split_key
from pex.policy.base import Policy, PolicyError
from pex.policy.constant import constant_policy
from pex.policy.records import check_record
from pex.policy.routing import RoutingPolicy, routing_policy
from pex.policy.sql import policy_sql
from pex.policy.tree import TreePolicy

ARMS = ["control", "treat"]


def _tree(name: str, cut: float, exploration: float = 0.1) -> TreePolicy:
    return TreePolicy(name=name, arms=ARMS, default_arm="control", exploration=exploration,
                      tree={"feature": "age", "op": "<=", "value": cut, "left": {"arm": "treat"}, "right": {"arm": "control"}})


def _two_trees(exploration: float = 0.1) -> RoutingPolicy:
    return routing_policy("r", [(0.0, 0.5, _tree("a", 30.0, exploration)), (0.5, 0.5, _tree("b", 50.0, exploration))],
                          key=split_key(0), unit="user_id", experiment="exp")


@pytest.fixture(scope="module")
def data() -> pd.DataFrame:
    return simulate(20_000, seed=3).data


def test_routes_are_the_halves_of_the_held_out_split(data):
    """Route 0 is exactly the units the split with offset 0 holds out, route 1 those offset 0.5 holds out: what lets a
    cross-fitted run serve every unit the half-policy that never saw it."""
    policy = _two_trees()
    route = policy.route_of(data["user_id"].to_numpy())
    first = evaluation_mask(data["user_id"].to_numpy(), 0.5, 0)
    second = evaluation_mask(data["user_id"].to_numpy(), 0.5, 0, offset=0.5)
    assert not (first & second).any() and (first | second).all()
    assert np.array_equal(route == 0, first) and np.array_equal(route == 1, second)
    assert 0.48 < first.mean() < 0.52
    # the usual split is unchanged by the arc rule: offset 0 is "hash below share"
    h = pd.util.hash_array(data["user_id"].astype(str).to_numpy(dtype=object), hash_key=split_key(0))
    assert np.array_equal(evaluation_mask(data["user_id"].to_numpy(), 0.25, 0), h < np.uint64(0.25 * 2.0**64))
    assert np.array_equal(hash_interval_mask(h, 0.75, 0.5), (h >= np.uint64(0.75 * 2.0**64)) | (h < np.uint64(0.25 * 2.0**64)))


def test_each_unit_gets_its_routes_decision(data):
    policy = _two_trees()
    route = policy.route_of(data["user_id"].to_numpy())
    greedy = policy.greedy_arms(data)
    own = np.where(route == 0, policy.routes[0].greedy_arms(data), policy.routes[1].greedy_arms(data))
    assert np.array_equal(greedy, own)
    assert 0 < (greedy != policy.routes[0].greedy_arms(data)).sum()  # the second route really decides differently
    probs = policy.action_probabilities(data)
    assert np.allclose(probs.sum(axis=1), 1.0) and set(np.round(probs.max(axis=1), 12)) == {0.95}


def test_decide_records_and_one_are_decide_by_unit(data):
    """The server's paths (records with unit ids, one unit in Python scalars) give exactly the batch decisions."""
    policy = _two_trees()
    rows = data.iloc[:400]
    arms, propensity = policy.decide(rows, rows["user_id"])
    records = [check_record(policy, {"age": a}) for a in rows["age"]]
    arms_r, propensity_r = policy.decide_records(records, list(rows["user_id"]))
    assert list(arms) == list(arms_r) and np.allclose(propensity, propensity_r)
    for i in range(0, 400, 7):
        arm, p = policy.decide_one(records[i], rows["user_id"].iloc[i])
        assert (arm, p) == pytest.approx((arms[i], propensity[i]))
    # the draw is the routing policy's own (its name and version), so a new version explores differently
    again = policy.replace(version=2).decide(rows, rows["user_id"])[0]
    assert list(again) != list(arms)


def test_documents_round_trip_with_value_routes_loaded_by_fit():
    fits = {}

    class Model:  # what a value policy reads of its bound model until it decides
        arms, control, metrics = ARMS, "control", ["m"]
        encoder = SimpleNamespace(columns=["age"], kinds={"age": "numeric"})

    def load(vm: dict):
        fits[vm["fit"]] = fits.get(vm["fit"], 0) + 1
        return Model()

    def value(name: str, fit: str) -> Policy:
        return Policy.from_document({"format": "pex.policy/1", "name": name, "kind": "value", "arms": ARMS,
                                     "default_arm": "control", "exploration": 0.05,
                                     "value_model": {"fit": fit, "metrics": {"m": {"coefficient": 1.0}}}}, load)

    policy = routing_policy("r", [(0.0, 0.5, value("a", "fit-1")), (0.5, 0.5, value("b", "fit-2"))], key="k", unit="id")
    text = policy.to_json()
    back = Policy.from_json(text, load)
    assert isinstance(back, RoutingPolicy) and back.to_document() == json.loads(text)
    assert [p.value_model["fit"] for p in back.routes] == ["fit-1", "fit-2"] and fits == {"fit-1": 2, "fit-2": 2}
    assert back.complexity == 10 and "2 routes" in back.description
    with pytest.raises(PolicyError, match="needs its stored effect models"):
        Policy.from_json(text)


@pytest.mark.parametrize(("change", "message"), [
    (lambda r: r["routes"][1].update(start=0.6), "starts at 0.6"),
    (lambda r: r["routes"][1].update(share=0.4), "add up to 0.9"),
    (lambda r: r.update(routes=[]), "non-empty list"),
    (lambda r: r.pop("unit"), "routing.unit"),
    (lambda r: r["routes"][0].update(share="half"), "must be a number"),
    (lambda r: r["routes"][1]["policy"].update(exploration=0.2), "and exploration 0.2"),
    (lambda r: r["routes"][1]["policy"].update(arms=["control", "treat", "more"]), "treat', 'more'"),
])
def test_malformed_routing_documents_say_what_is_wrong(change, message):
    doc = _two_trees().to_document()
    change(doc["routing"])
    with pytest.raises(PolicyError, match=message):
        Policy.from_document(doc)


def test_what_a_routing_policy_cannot_do(data):
    policy = _two_trees()
    with pytest.raises(DataError, match="no column 'user_id'"):
        policy.greedy_arms(data.drop(columns=["user_id"]))
    with pytest.raises(PolicyError, match="SQL cannot compute"):
        policy_sql(policy)
    nested = policy.to_document()
    nested["routing"]["routes"][0]["policy"] = policy.to_document()
    twice = policy.to_document()
    twice["routing"]["routes"][0]["policy"] = nested  # one level of nesting is allowed, two are not
    with pytest.raises(PolicyError, match="itself routes to a routing policy"):
        Policy.from_document(twice)
    # constants route too, and features are the union of the routes'
    mixed = routing_policy("m", [(0.0, 0.5, constant_policy(ARMS, "treat", 0.1, "t")), (0.5, 0.5, _tree("b", 40.0))],
                           key="k", unit="user_id")
    assert mixed.features == ["age"] and mixed.complexity == 1


def test_a_nested_routing_decides_as_its_inner_policy_for_each_unit(data):
    """A staged rollout routes a share of units to a cross-fitted policy (itself a routing policy): each unit of that
    share gets exactly the inner policy's greedy arm, on the batch, records and one-unit paths; the route a
    decision logs stays the outer route's name."""
    inner = _two_trees(exploration=0.0)
    other = constant_policy(ARMS, "control", 0.0, "base")
    outer = routing_policy("rollout", [(0.0, 0.3, other), (0.3, 0.7, inner.replace(name="canary"))],
                           key="0123456789abcdef", unit="user_id", experiment="exp")
    again = Policy.from_document(json.loads(json.dumps(outer.to_document())))
    units = data["user_id"].to_numpy()
    in_canary = outer.route_of(units) == 1
    assert 0.65 < in_canary.mean() < 0.75
    for policy in (outer, again):
        greedy = policy.greedy_arms(data)
        assert np.array_equal(greedy[in_canary], inner.greedy_arms(data)[in_canary])
        assert (greedy[~in_canary] == 0).all()
        rows = data.iloc[:300]
        records = [check_record(policy, r) for r in rows[policy.features].to_dict("records")]
        ids = rows["user_id"].tolist()
        chosen, _ = policy.decide_records(records, ids)
        batch, _ = policy.decide(rows, rows["user_id"])
        assert list(chosen) == list(batch)
        assert [policy.decide_one(records[i], ids[i])[0] for i in range(20)] == list(batch[:20])
        # no exploration: the decision is the inner policy's own greedy arm
        inner_arms = np.asarray(ARMS)[inner.greedy_arms(rows)]
        canary = in_canary[:300]
        assert list(np.asarray(batch)[canary]) == list(inner_arms[canary])
        assert set(policy.route_names(ids)) == {"base", "canary"}
