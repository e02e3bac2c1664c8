"""The decision log under faults: every recorded row ends in the store or in the dead-letter file, never nowhere."""

from __future__ import annotations

import json
import shutil
import time
from datetime import UTC, datetime, timedelta

import pytest

from pex.errors import DataError, PexError, StoreError, UnavailableError
from pex.services.decision_log import DecisionLog
from pex.services.settings import load_config
from pex.store.dead_letters import DeadLetterFile, read_dead_letters
from pex.store.workspace import Workspace

T0 = datetime(2026, 12, 1, 12, tzinfo=UTC)


def rows(n: int, start: int = 0, bad: frozenset[int] = frozenset()) -> list[dict]:
    """Decision rows ``start..start+n``; those in ``bad`` have a unit id no database can store (a lone surrogate)."""
    return [{"decision_id": f"{i:032x}", "decided_at": T0 + timedelta(microseconds=i), "experiment": None,
             "policy": "p", "version": 1, "unit": f"u{i}\ud800" if i in bad else f"u{i}", "arm": "a",
             "propensity": 0.5, "features": {"country": "DE"}, "route": None} for i in range(start, start + n)]


@pytest.fixture
def ws(tmp_path):
    workspace = Workspace(tmp_path / "ws")
    yield workspace
    workspace.close()


def logged_ids(ws: Workspace) -> list[str]:
    return ws.read_decisions()["decision_id"].tolist()


def test_refused_rows_are_dead_lettered_and_the_rest_logged_in_order(ws):
    bad = frozenset({3, 500, 501, 999})
    calls = []

    def append(batch):
        calls.append(len(batch))
        return ws.append_decisions(batch)

    sent = rows(1_000, bad=bad)
    sent[700]["unit"] = None  # a NOT NULL column: the store's IntegrityError, refused like the surrogate
    log = DecisionLog(append, dead_letter=DeadLetterFile(ws.home), check_store=ws.check_identity)
    log.record(sent)
    assert log.flush() == 995
    good = [r["decision_id"] for i, r in enumerate(sent) if i not in bad | {700}]
    assert logged_ids(ws) == good  # the rest, in order, once
    dead = list(read_dead_letters(ws.home))
    assert [d["row"]["decision_id"] for d in dead] == [sent[i]["decision_id"] for i in sorted(bad | {700})]
    assert dead[0]["row"]["unit"] == "u3\ud800"  # kept exactly (JSON escapes it)
    assert "UnicodeEncodeError" in dead[0]["error"] and "IntegrityError" in dead[3]["error"]
    assert log.logged == 995 and log.dead_lettered == 5 and log.depth == 0
    assert len(calls) < 100  # bisected, not row by row
    # later flushes are not poisoned
    log.record(rows(10, start=2_000))
    assert log.flush() == 10 and len(logged_ids(ws)) == 1_005


def test_the_store_going_down_while_bisecting_puts_every_unwritten_row_back_in_order():
    written: list[int] = []
    down = [False]
    calls = [0]

    def append(batch):
        calls[0] += 1
        if down[0] or calls[0] == 4:  # the store fails in the middle of isolating the refused row
            raise StoreError("database is locked")
        if any(r["n"] == 13 for r in batch):
            raise DataError("refused")
        written.extend(r["n"] for r in batch)
        return len(batch)

    dead: list[int] = []

    class Sink:
        folder = "memory"

        def write(self, batch, error):
            dead.extend(r["n"] for r in batch)
            return len(batch)

    log = DecisionLog(append, dead_letter=Sink())
    log.record([{"n": i} for i in range(40)])
    with pytest.raises(StoreError):
        log.flush()
    assert log.depth + len(written) == 40 and not dead
    log.record([{"n": 40}])
    log.close()
    assert sorted(written + dead) == list(range(41)) and dead == [13]
    assert written == sorted(written)  # the log's order is the order decisions were made


def test_a_store_that_stays_down_stalls_the_log_then_recovers():
    down = [True]
    written = []

    def append(batch):
        if down[0]:
            raise StoreError("database or disk is full")
        written.extend(batch)
        return len(batch)

    log = DecisionLog(append, stall_seconds=0.05)
    log.admit()
    log.record(rows(5))
    with pytest.raises(StoreError):
        log.flush()
    time.sleep(0.1)
    with pytest.raises(UnavailableError, match=r"could not be written for over 0.05 s \(5 decisions buffered\)") as refused:
        log.admit()
    assert "disk is full" not in refused.value.message  # a client's 503 body says what, the operator's log why
    assert "disk is full" in log.trouble()
    down[0] = False
    assert log.flush() == 5
    assert log.trouble() is None
    log.admit()


def test_a_full_buffer_refuses_decisions_until_it_is_written():
    written = []
    log = DecisionLog(lambda batch: written.extend(batch) or len(batch), max_buffered=10)
    log.admit(10)
    with pytest.raises(UnavailableError, match="cannot take 11 more"):
        log.admit(11)
    log.record(rows(10))
    with pytest.raises(UnavailableError, match="buffer is full"):
        log.admit(1)
    log.flush()
    log.admit(10)
    assert len(written) == 10


def test_rows_the_store_still_refuses_at_shutdown_are_dead_lettered(tmp_path):
    def append(batch):
        raise StoreError("database is locked")

    sink = DeadLetterFile(tmp_path)
    log = DecisionLog(append, dead_letter=sink)
    log.record(rows(7))
    log.close(attempts=2, pause=0.01)
    dead = list(read_dead_letters(tmp_path))
    assert [d["row"]["decision_id"] for d in dead] == [r["decision_id"] for r in rows(7)]
    assert all("not written at shutdown" in d["error"] and "locked" in d["error"] for d in dead)
    assert log.depth == 0 and log.dead_lettered == sink.written == 7
    assert dead[0]["row"]["decided_at"] == T0.isoformat()


@pytest.mark.parametrize("how", ["removed", "replaced"])
def test_a_removed_or_replaced_workspace_is_noticed_and_nothing_more_is_written_to_it(ws, tmp_path, how):
    log = DecisionLog(ws.append_decisions, dead_letter=DeadLetterFile(ws.home), check_store=ws.check_identity)
    log.record(rows(3))
    assert log.flush() == 3
    log.record(rows(4, start=3))
    if how == "removed":
        shutil.rmtree(ws.home)
    else:  # a copy put in its place: the same content, but not the file this process has open
        shutil.copytree(ws.home, tmp_path / "copy")
        shutil.rmtree(ws.home)
        shutil.move(tmp_path / "copy", ws.home)
    with pytest.raises(StoreError, match="removed or replaced"):
        ws.check_identity()
    assert log.flush() == 0
    with pytest.raises(UnavailableError, match="removed or replaced"):
        log.admit()
    assert "removed or replaced" in log.trouble()
    dead = list(read_dead_letters(ws.home))
    assert [d["row"]["decision_id"] for d in dead] == [r["decision_id"] for r in rows(4, start=3)]
    with pytest.raises(StoreError, match="removed or replaced"):  # the store itself refuses to write through
        ws.append_decisions(rows(1, start=9))
    with pytest.raises(StoreError, match="removed or replaced"):
        ws.put_outcomes("exp", [("u1", "m", 1.0)])
    if how == "replaced":
        with Workspace(ws.home, create=False) as fresh:
            assert len(fresh.read_decisions()) == 3  # only what was written before
            fresh.check_identity()  # a process that opens it now is fine


def test_outcomes_the_store_cannot_hold_are_a_data_error_and_none_is_stored(ws_home):
    with Workspace(ws_home) as ws:
        metric = next(iter(ws.load_dataset_spec(ws.dataset_version("exp").id).metrics))
        with pytest.raises(DataError, match="refused these outcomes"):
            ws.put_outcomes("exp", [("u1", metric, 1.0), ("u2\ud800", metric, 1.0)])
        assert ws.read_outcomes("exp").empty


def test_rows_neither_store_nor_dead_letter_file_takes_end_in_the_process_log(tmp_path, caplog):
    def append(batch):
        raise StoreError("database or disk is full")

    (tmp_path / "serve").write_text("a file where the dead-letter folder would be")  # the folder cannot be made
    log = DecisionLog(append, dead_letter=DeadLetterFile(tmp_path))
    log.record(rows(3))
    log.close(attempts=1)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("decision not logged: ")]
    assert [json.loads(line.split(": ", 1)[1])["row"]["decision_id"] for line in lines] == [r["decision_id"] for r in rows(3)]
    assert log.dead_lettered == 0


@pytest.mark.parametrize(("env", "words"), [
    ({"PEX_MAX_BUFFERED": "0"}, "max_buffered must be at least 1"),
    ({"PEX_MAX_BUFFERED": "500", "PEX_MAX_BATCH": "1000"}, r"max_buffered \(500\) must be at least max_batch \(1000\)"),
    ({"PEX_LOG_STALL_SECONDS": "0"}, "log_stall_seconds must be above 0"),
    ({"PEX_LOG_STALL_SECONDS": "soon"}, "must be float"),
])
def test_the_log_settings_are_checked(env, words):
    with pytest.raises(PexError, match=words):
        load_config(environ=env)
    assert load_config(environ={"PEX_MAX_BUFFERED": "20000", "PEX_LOG_STALL_SECONDS": "2.5"})["LOG_STALL_SECONDS"] == 2.5
