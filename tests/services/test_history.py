"""Results that cannot be shopped (issue 23): the split key is the dataset version's, every `pex run` is recorded with
its settings, and a later run on the same dataset version recommends the first run's recommendation unless its owner
records a reason."""

from __future__ import annotations

import contextlib
import io
import json
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

import jsonschema
import pytest

from pex.cli.main import main
from pex.errors import PexError
from pex.evaluation.procedures import CERTIFICATIONS
from pex.experiment.simulate import simulate
from pex.experiment.split import dataset_split_key, evaluation_mask, holdout_key, split_key
from pex.report.summary import RunSummary
from pex.services.history import EARLIER_RUN, EARLIER_UNREADABLE, FIRST, REASON, bind, check_reason, result_settings
from pex.services.run import RunOptions
from pex.store.records import RunRecord
from pex.store.workspace import Workspace

SCHEMA = json.loads(resources.files("pex").joinpath("schemas/summary.schema.json").read_text())
REASON_TEXT = "run 1 was made before the guardrail limit was agreed"
DEFAULT = CERTIFICATIONS[0]
OTHER = next(c for c in CERTIFICATIONS if c != DEFAULT)  # a switch of --certification


def _cli(home: Path, *args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["--home", str(home), *args])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """Three `pex run` on one 2,000-unit dataset version: seed 3 (the first), seed 4 with another --certification (other
    settings, no reason) and seed 5 with --reason. (A re-run with the same settings: test_pipeline_runs.py's null scenario.)"""
    base = tmp_path_factory.mktemp("history")
    simulate(2_000, scenario="notification_cadence", seed=11).write(base / "exp", name="exp")
    home = base / "ws"
    done = {}
    for i, (seed, extra) in enumerate([(3, ()), (4, ("--certification", OTHER)), (5, ("--reason", REASON_TEXT))], start=1):
        out = base / f"out{i}"
        code, stdout, err = _cli(home, "run", str(base / "exp" / "exp.toml"), "--out", str(out), "--learner", "t",
                                 "--dense", "16", "--seed", str(seed), *extra)
        assert code == 0, err
        done[i] = {"summary": json.loads((out / "summary.json").read_text()), "html": (out / "report.html").read_text(),
                   "text": stdout, "err": err, "out": out}
    with Workspace(home) as ws:
        _, dv = ws.load_dataset("exp")
        done["dataset"] = dv
        done["history"] = ws.run_history("exp", dv.id)
    done["home"] = home
    return done


def test_the_split_key_is_the_dataset_versions_whatever_the_seed(runs):
    key = dataset_split_key(runs["dataset"].content_hash)
    assert key != split_key(3) and key != split_key(4)
    for i in range(1, 4):
        s = runs[i]["summary"]
        assert s["crossfit"]["key"] == key  # the routing policies route by it
        assert s["hte"]["holdout"]["key"] == key and s["hte"]["holdout"]["seed"] == s["options"]["seed"]
    # the same units certify: the held-out arm counts of every run are equal (seeds 3, 4 and 5)
    counts = {json.dumps(runs[i]["summary"]["evaluation_rows"]["parts"][0]["arm_counts"]) for i in range(1, 4)}
    assert len(counts) == 1


def test_a_later_run_with_another_seed_recommends_the_first_runs_stored_version(runs):
    first, second = runs[1]["summary"], runs[2]["summary"]
    assert first["history"]["run"] == 1 and first["history"]["binding"] == FIRST
    assert "recommendation" in first and "from_run" not in first["recommendation"] and "own_recommendation" not in first
    h = second["history"]
    assert h["run"] == 2 and h["binding"] == EARLIER_RUN and h["binding_run"] == 1
    assert h["earlier"][0]["differs"] == [{"setting": "certification", "then": DEFAULT, "now": OTHER},
                                          {"setting": "seed", "then": 3, "now": 4}]
    assert second["recommended_policy"] == first["recommended_policy"]
    first_version = first["recommendation"]["document"]["version"]
    assert second["recommendation"]["from_run"] == {"run": 1, "id": first["history"]["id"], "version": first_version,
                                                    "text": second["recommendation"]["from_run"]["text"]}
    assert second["recommendation"]["document"]["version"] == first_version
    # this run stored its own version of the same policy beside it, kept for information
    own = second["own_recommendation"]
    assert own["document"]["version"] != first_version
    recorded = runs["history"][1]
    assert (recorded.policy, recorded.policy_version, recorded.bound_to) == (first["recommended_policy"], first_version,
                                                                             first["history"]["id"])
    assert recorded.settings["seed"] == 4 and recorded.settings["certification"] == OTHER and recorded.reason is None


def test_the_second_runs_report_says_it_is_the_second_and_what_differed(runs):
    second = runs[2]
    text = second["summary"]["history"]["text"]
    assert text.startswith(f"Run 2 on dataset version 1; run 1 used certification {DEFAULT} (this run: {OTHER}), "
                           "seed 3 (this run: 4).")
    assert "The recommendation is run 1's" in text
    html = second["html"]
    assert f"Run 2 on dataset version 1; run 1 used certification {DEFAULT} (this run: {OTHER}), seed 3 (this run: 4)." in html
    # the certificate shown is the binding run's, this run's own is kept beside it
    assert second["summary"]["recommendation"]["certification"] == runs[1]["summary"]["recommendation"]["certification"]
    assert second["summary"]["own_recommendation"]["certification"]["method"] != \
        runs[1]["summary"]["recommendation"]["certification"]["method"]
    version = second["summary"]["recommendation"]["from_run"]["version"]
    publish = f"pex publish {second['summary']['recommended_policy']} --version {version}"
    assert publish in html and publish in second["text"]
    assert "History: Run 2 on dataset version 1" in second["text"]
    assert "run 2 on this dataset version" in second["err"]
    for i in range(1, 4):
        jsonschema.validate(runs[i]["summary"], SCHEMA, cls=jsonschema.Draft202012Validator)
        RunSummary.load(runs[i]["summary"])


def test_a_reason_makes_the_later_run_bind_and_is_shown(runs):
    third = runs[3]["summary"]
    h = third["history"]
    assert h["binding"] == REASON and h["binding_run"] == 3 and h["reason"] == REASON_TEXT
    assert "from_run" not in third["recommendation"] and "own_recommendation" not in third
    own_version = third["recommendation"]["document"]["version"]
    assert own_version > runs[1]["summary"]["recommendation"]["document"]["version"]  # this run's own stored version
    assert REASON_TEXT in h["text"] and REASON_TEXT in runs[3]["html"]
    assert runs[3]["summary"]["options"]["reason"] == REASON_TEXT
    assert runs["history"][2].reason == REASON_TEXT and runs["history"][2].binds


def test_the_recommended_policy_object_and_publishing_serve_the_first_runs_version(runs, tmp_path):
    """A run after the reason run recommends the reason run's recommendation; pex.run's RunResult.policy() and the
    demo's publish step use the very version the recommendation names."""
    import shutil

    from pex.services.demo import publish_recommendation
    from pex.services.run import run

    home = tmp_path / "ws"
    shutil.copytree(runs["home"], home)
    spec = runs[1]["out"].parent / "exp" / "exp.toml"
    result = run(spec, tmp_path / "out", home=home, learner="t", dense=64, seed=9)
    first_version = runs[1]["summary"]["recommendation"]["document"]["version"]
    assert result.summary["history"]["run"] == 4 and result.summary["history"]["binding_run"] == 3
    assert result.summary["recommendation"]["from_run"]["run"] == 3
    bound = runs[3]["summary"]["recommendation"]["document"]["version"]
    assert bound != first_version
    assert result.policy().version == result.recommended_version == bound
    assert result.policy(result.recommended_policy).version != bound  # by name: this run's own version
    # `pex publish NAME` without --version publishes it too: the newest version is this run's own, for information
    code, out, err = _cli(home, "publish", result.recommended_policy, "--json")
    assert code == 0, err
    assert json.loads(out)["to_version"] == bound
    # the demo's publish step names the binding run's version (certified here, so that it is published at all)
    rec = result.typed.recommendation
    rec = rec.model_copy(update={"verdict": "personalize", "certification": rec.certification.model_copy(
        update={"certified": [rec.policy]})})
    with Workspace(home) as ws:
        done = publish_recommendation(ws, rec, result.policy_objects)
        assert done.version == bound and done.release is None and ws.live_versions()[rec.policy] == bound
    # any other policy of that run publishes its newest version by default, as before (through the gate: forced,
    # since the run need not have certified it)
    other = next(p for p in result.policy_objects.values() if p.name != result.recommended_policy)
    code, out, err = _cli(home, "publish", other.name, "--json", "--force", "--reason", "default version test")
    assert code == 0 and json.loads(out)["to_version"] == other.version, err


def test_an_empty_reason_is_refused_before_any_work(tmp_path):
    code, _out, err = _cli(tmp_path / "ws", "run", str(tmp_path / "missing.toml"), "--reason", "   ")
    assert code == 2 and "--reason is empty" in err
    assert not (tmp_path / "ws").exists()


# --------------------------------------------------------------------------- the rule alone, on records


def _record(i: int, settings: dict, *, policy: str = "p", version: int = 1, bound_to: int | None = None,
            reason: str | None = None) -> RunRecord:
    return RunRecord(i, "exp", "d1", None, datetime(2026, 12, 1, i, tzinfo=UTC), settings, reason, policy, version,
                     policy, version, bound_to)


def test_result_settings_ignore_the_reason_and_knobs_of_steps_that_are_off():
    a = RunOptions(seed=1).to_dict()
    b = RunOptions(seed=1, holdout=0.4, trials=9, reason="why").to_dict()  # cross-fitted and no Ax: holdout and trials unused
    assert result_settings(a) == result_settings(b)
    assert "build.seed" not in result_settings(a) and result_settings(a)["build.budget"] is None
    c = RunOptions(seed=1, crossfit=False, holdout=0.4).to_dict()
    assert result_settings(c)["holdout"] == 0.4
    assert result_settings(RunOptions(certification=OTHER).to_dict())["certification"] == OTHER


def test_bind_carries_the_latest_binding_runs_recommendation_and_lists_every_earlier_run(runs):
    s1, s2 = RunOptions(seed=0).to_dict(), RunOptions(seed=1, certification=OTHER).to_dict()
    a = runs[1]["summary"]["recommended_policy"]
    earlier = [_record(1, s1, policy=a, version=1), _record(2, s2, policy=a, version=1, bound_to=1)]
    got = bind(earlier, run_id=3, settings=s2, reason=None, dataset_version=2, own=("b", 3),
               load_summary=lambda i: runs[1]["summary"])  # a stored summary of this pex
    assert got.policy == (a, 1) and got.bound_to == 1
    assert got.carried["from_run"]["run"] == 1 and got.carried["policy"] == a
    h = got.history
    assert (h["run"], h["binding"], h["binding_run"], h["dataset_version"]) == (3, EARLIER_RUN, 1, 2)
    assert h["earlier"][0]["differs"] == [{"setting": "certification", "then": DEFAULT, "now": OTHER},
                                          {"setting": "seed", "then": 0, "now": 1}]
    assert h["earlier"][1]["differs"] == [] and not h["earlier"][1]["binds"]
    assert h["text"].startswith(f"Run 3 on dataset version 2; run 1 used certification {DEFAULT} (this run: {OTHER}), "
                                "seed 0 (this run: 1). Run 2 used the same settings.")
    assert "This run alone would recommend b v3" in h["text"]


def test_bind_lets_this_run_bind_when_the_binding_runs_summary_cannot_be_read():
    s1 = RunOptions(seed=0).to_dict()
    got = bind([_record(1, s1)], run_id=2, settings=RunOptions(seed=1).to_dict(), reason=None, dataset_version=1,
               own=("b", 2), load_summary=lambda i: {"format": "pex.summary/1", "recommendation": {"policy": "p"}})
    assert got.carried is None and got.bound_to is None and got.history["binding"] == EARLIER_UNREADABLE
    assert "cannot be carried over" in got.history["text"]


def test_a_reason_is_stripped_and_an_empty_one_refused():
    assert check_reason("  two   words ") == "two words" and check_reason(None) is None
    with pytest.raises(PexError, match="--reason is empty"):
        check_reason(" \n ")


def test_holdout_key_reads_fits_stored_before_keys_were_recorded():
    assert holdout_key({"share": 0.5, "seed": 7}) == split_key(7)
    assert holdout_key({"share": 0.5, "seed": 7, "key": "0123456789abcdef"}) == "0123456789abcdef"
    units = [f"u{i}" for i in range(2_000)]
    by_key = evaluation_mask(units, 0.5, key=split_key(7))
    assert (by_key == evaluation_mask(units, 0.5, seed=7)).all()
    assert not (evaluation_mask(units, 0.5, key=dataset_split_key("abc")) == by_key).all()
    with pytest.raises(PexError, match="content hash"):
        dataset_split_key("")
