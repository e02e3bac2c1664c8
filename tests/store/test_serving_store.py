"""The serving tables: releases replay to the live version, tokens keep only hashes, the decision log round-trips."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from pex.errors import NotFoundError, PexError
from pex.experiment.split import keyed_hash
from pex.policy.base import Policy
from pex.policy.records import check_record
from pex.services.decision_log import DecisionLog
from pex.store.workspace import Workspace

EXAMPLE = Path(__file__).resolve().parents[2] / "policies" / "notification_cadence-tree-example.json"
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def ws(request, tmp_path, exp_dir):
    url = None
    if request.param == "postgresql":
        url = request.getfixturevalue("empty_postgres_url")
    from pex.services.experiments import ingest

    workspace = Workspace(tmp_path / "ws", database_url=url)
    ingest(lambda: workspace, exp_dir / "exp.toml")
    doc = {**json.loads(EXAMPLE.read_text()), "experiment": "exp"}
    workspace.put_policies("exp", [(doc, None), (doc, None), (doc, None)])  # versions 1, 2, 3
    yield workspace
    workspace.close()


NAME = "notification_cadence-tree-example"


def test_publish_and_rollback_replay_as_a_stack(ws):
    assert ws.live_versions() == {}
    with pytest.raises(NotFoundError, match="never published"):
        ws.rollback(NAME, "me")
    assert ws.publish(NAME, 1, "me").to_version == 1
    with pytest.raises(PexError, match="nothing to roll back to"):
        ws.rollback(NAME, "me")
    with pytest.raises(PexError, match="already live"):
        ws.publish(NAME, 1, "me")
    ws.publish(NAME, None, "you")  # the newest: 3
    ws.publish(NAME, 2, "me")
    assert ws.live_versions() == {NAME: 2}
    assert (ws.rollback(NAME, "me").to_version, ws.live_versions()) == (3, {NAME: 3})
    assert (ws.rollback(NAME, "me").to_version, ws.live_versions()) == (1, {NAME: 1})
    history = [(r.action, r.from_version, r.to_version, r.actor) for r in ws.releases(NAME)]
    assert history == [("publish", None, 1, "me"), ("publish", 1, 3, "you"), ("publish", 3, 2, "me"),
                       ("rollback", 2, 3, "me"), ("rollback", 3, 1, "me")]
    with pytest.raises(NotFoundError, match="no version 9"):
        ws.publish(NAME, 9, "me")
    with pytest.raises(NotFoundError, match="no policy"):
        ws.publish("nope", None, "me")
    assert len(ws.releases(NAME)) == 5  # refused changes wrote nothing


def test_tokens_store_only_a_hash_and_revoke(ws):
    record, token = ws.create_token("decide", "svc")
    assert token.startswith("pex_") and ws.verify_token(token).name == "svc"
    with ws.engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT * FROM tokens")).mappings().all()
    assert token.split("_", 2)[2] not in json.dumps([dict(r) for r in stored], default=str)
    assert ws.verify_token(token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    assert ws.verify_token("pex_nothing") is None and ws.verify_token("") is None
    assert ws.verify_token(token).allows("decide") and not ws.verify_token(token).allows("admin")
    revoked = ws.revoke_token("svc")
    assert revoked.revoked_at is not None and ws.verify_token(token) is None
    assert ws.revoke_token(record.id).revoked_at == revoked.revoked_at  # twice keeps the first date
    with pytest.raises(PexError, match="unknown token scope"):
        ws.create_token("root")
    with pytest.raises(NotFoundError):
        ws.revoke_token("nobody")


def test_decision_log_rows_round_trip_exactly(ws):
    t0 = datetime(2026, 12, 1, 12, 0, 0, 123456, tzinfo=UTC)
    rows = [{"decision_id": f"{i:032x}", "decided_at": t0 + timedelta(microseconds=i), "experiment": "exp",
             "policy": NAME, "version": 2, "unit": f"u{i}", "arm": "daily", "propensity": 0.9 - i / 1e6,
             "features": {"age": 31.5, "country": "DE" if i % 2 else None}} for i in range(12_000)]
    log = DecisionLog(ws.append_decisions, flush_seconds=0.1).start()
    log.record(rows[:5_000])
    log.record(rows[5_000:])
    log.close()
    assert log.depth == 0 and log.logged == len(rows)
    back = ws.read_decisions("exp")
    assert len(back) == len(rows) == ws.count_decisions(NAME)
    assert list(back["decision_id"]) == [r["decision_id"] for r in rows]
    assert list(back["decided_at"]) == [pd.Timestamp(r["decided_at"]) for r in rows]
    assert back["features"].tolist() == [r["features"] for r in rows]
    np.testing.assert_array_equal(back["propensity"], [r["propensity"] for r in rows])


def test_a_failing_store_keeps_the_rows_buffered_in_order():
    written, fail = [], [True]

    def append(rows):
        if fail[0]:
            raise RuntimeError("database down")
        written.extend(rows)
        return len(rows)

    log = DecisionLog(append, flush_seconds=0.1)
    log.record([{"n": 1}, {"n": 2}])
    with pytest.raises(RuntimeError):
        log.flush()
    log.record([{"n": 3}])
    assert log.depth == 3
    fail[0] = False
    log.close()
    assert [r["n"] for r in written] == [1, 2, 3]


def test_few_ids_hash_as_pandas_does():
    ids = np.array([f"user-{i}" for i in range(600)] + ["", "é", "漢字", "1.0", "x" * 500], dtype=object)
    full = keyed_hash(pd.Series(ids), "0123456789abcdef")  # a Series: always pandas' own path
    for n in (1, 2, 3, 4, 5, 17, 256):
        for start in (0, 300, len(ids) - n):
            np.testing.assert_array_equal(keyed_hash(ids[start:start + n], "0123456789abcdef"), full[start:start + n])


def _random_tree(rng, depth):
    if depth == 0 or rng.random() < 0.2:
        return {"arm": str(rng.choice(["control", "daily", "weekly"]))}
    node = {"missing": str(rng.choice(["left", "right"])), "left": _random_tree(rng, depth - 1),
            "right": _random_tree(rng, depth - 1)}
    if rng.random() < 0.5:
        node |= {"feature": str(rng.choice(["age", "tenure_days"])), "op": "<=", "value": float(rng.uniform(10, 200))}
    else:
        node |= {"feature": "country", "op": "in", "value": sorted(rng.choice(["US", "DE", "IN", "BR", "1"], 2).tolist())}
    return node


def test_decide_records_equals_decide_on_frames_for_random_trees(sim):
    frame = sim.data[["user_id", "age", "tenure_days", "country"]].iloc[:3000].copy()
    rng = np.random.default_rng(3)
    frame.loc[rng.random(len(frame)) < 0.15, "age"] = np.nan
    frame["country"] = frame["country"].astype(object)
    frame.loc[rng.random(len(frame)) < 0.1, "country"] = None
    frame.loc[rng.random(len(frame)) < 0.05, "country"] = "ZZ"
    frame.loc[rng.random(len(frame)) < 0.05, "country"] = 1  # a number sent for a label
    for seed in range(15):
        tree = _random_tree(np.random.default_rng(seed), 5)
        policy = Policy.from_document({"format": "pex.policy/1", "name": f"t{seed}", "version": 1, "kind": "tree",
                                       "arms": ["control", "daily", "weekly"], "default_arm": "control",
                                       "exploration": 0.3, "tree": tree})
        sent = [{c: (None if pd.isna(v) else v) for c, v in row.items() if c != "user_id"}
                for row in frame.to_dict("records")]
        records = [check_record(policy, s) for s in sent]
        arms, p = policy.decide_records(records, list(frame["user_id"]))
        want_arms, want_p = policy.decide(frame.assign(country=frame["country"].map(
            lambda v: v if v is None or isinstance(v, str) else str(v))), frame["user_id"])
        np.testing.assert_array_equal(arms, want_arms)
        np.testing.assert_allclose(p, want_p)
        one = [policy.decide_one(r, u) for r, u in zip(records, frame["user_id"])]  # a server's single decisions
        assert [a for a, _ in one] == list(want_arms)
        assert [q for _, q in one] == list(want_p)  # exactly, not approximately


def test_value_policy_records_decide_as_its_frames_do_with_holes(served):
    from pex.services.models import effect_model_by_id

    ws = Workspace(served.home, create=False)
    policy = Policy.from_document(ws.get_policy(served.value).document, lambda vm: effect_model_by_id(ws, vm["fit"]))
    frame = ws.load_dataset("exp")[0].frame[["user_id", *policy.features]].iloc[:2000].copy()
    rng = np.random.default_rng(8)
    kinds = policy.feature_kinds()
    for column, kind in kinds.items():
        holes = rng.random(len(frame)) < 0.1
        if kind == "numeric":
            frame.loc[holes, column] = np.nan
        else:
            frame[column] = frame[column].astype(object)
            frame.loc[holes, column] = None
            frame.loc[rng.random(len(frame)) < 0.05, column] = " never-seen "
    sent = [{c: (None if pd.isna(v) else v) for c, v in row.items() if c != "user_id"} for row in frame.to_dict("records")]
    arms, p = policy.replace(exploration=0.2).decide_records([check_record(policy, s) for s in sent], list(frame["user_id"]))
    want_arms, want_p = policy.replace(exploration=0.2).decide(frame, frame["user_id"])
    np.testing.assert_array_equal(arms, want_arms)
    np.testing.assert_allclose(p, want_p)
    explored = policy.replace(exploration=0.2)
    one = [explored.decide_one(check_record(explored, s), u) for s, u in zip(sent[:300], frame["user_id"][:300])]
    assert one == list(zip(want_arms[:300], want_p[:300]))
    ws.close()
