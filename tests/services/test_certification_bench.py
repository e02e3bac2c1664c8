"""The certification benchmark (bench/certification.py): variants replayed on one cached fit.

The fast tests check the bookkeeping (variants' keyword arguments, summaries, the command line); the slow test fits
one small experiment, caches it and checks that replaying the run's own settings reproduces its recommendation,
that a replay from the cache gives the same records, and that the no-screen variant tests every candidate.
"""

from __future__ import annotations

import argparse
import json
import math
from types import SimpleNamespace

import pytest

from bench.certification import (
    BENCH_KEYS,
    ORDERS,
    SCREENS,
    VARIANTS,
    _variant,
    cached,
    evaluate,
    fit_all,
    format_table,
    load_crossfit,
    main,
    recommend_kwargs,
    summarize,
)
from bench.guardrails import plan


def _fitted(screens: dict) -> SimpleNamespace:
    return SimpleNamespace(screens=screens, holdout_share=1.0)


def test_a_variant_overrides_the_runs_own_arguments():
    run_screens = {"p": {"g": object()}}
    assert recommend_kwargs(_fitted(run_screens), {"certification": "step-down"}) == {
        "screen": run_screens, "holdout_share": 1.0, "certification": "step-down"}
    assert recommend_kwargs(_fitted(run_screens), {"screen": {}})["screen"] == {}
    assert recommend_kwargs(_fitted(run_screens), {"screen": "none"})["screen"] == {}
    assert recommend_kwargs(_fitted(run_screens), {"screen": "run"})["screen"] is run_screens
    with pytest.raises(ValueError, match="unknown screen 'nope'"):
        recommend_kwargs(_fitted(run_screens), {"screen": "nope"})


def test_the_default_variants_are_the_procedures_with_and_without_the_screen():
    from pex.evaluation.recommendation import CERTIFICATION, CERTIFICATIONS

    first = next(iter(VARIANTS.values()))
    assert first == {"certification": CERTIFICATION}  # the pipeline's own settings first: its replay is checked
    assert {v["certification"] for v in VARIANTS.values()} == set(CERTIFICATIONS)
    assert all(v.get("screen", "run") in SCREENS and v.get("policy_order", "run") in ORDERS for v in VARIANTS.values())
    # the benchmark's own keys are not passed on to recommend()
    kwargs = recommend_kwargs(_fitted({}), {"certification": "gated", "policy_order": "recipe"})
    assert not set(BENCH_KEYS) & set(kwargs) and kwargs["certification"] == "gated"


def test_the_recipe_order_puts_the_value_ladder_safest_first_and_single_arms_last():
    def policy(name: str, unsearched: bool = False, power: float | None = None, arm: str | None = None) -> SimpleNamespace:
        lineage = {"unsearched": True} if unsearched else {}
        if power is not None:
            lineage["planned_power"] = power
        return SimpleNamespace(name=name, lineage=lineage, single_arm=arm)

    policies = [policy("control", arm="control"), policy("treat", arm="treat"), policy("value", unsearched=True),
                policy("value-p50", True, 0.5), policy("value-p99", True, 0.99), policy("tree-d2"), policy("pareto-1")]
    order = ORDERS["recipe"](SimpleNamespace(policies=policies))
    assert [policies[i].name for i in order] == ["value-p99", "value", "value-p50", "tree-d2", "pareto-1", "control", "treat"]
    assert ORDERS["run"](SimpleNamespace(policies=policies)) == list(range(len(policies)))


@pytest.mark.parametrize("text, message", [("x", "NAME=JSON"), ("x=[1]", "NAME=JSON"), ("x={bad", "not JSON"),
                                           ('={"a": 1}', "NAME=JSON")])
def test_a_bad_variant_on_the_command_line(text, message):
    with pytest.raises(argparse.ArgumentTypeError, match=message):
        _variant(text)
    assert _variant('fs={"certification": "fixed-sequence"}') == ("fs", {"certification": "fixed-sequence"})


def test_summaries_count_recommendations_and_certified_families_beyond_the_limit():
    def record(variant: str, exceeds: bool, family: bool, share: float, kind: str, certified: int) -> dict:
        return {"variant": variant, "scenario": "s", "exceeds": exceeds, "any_certified_exceeds": family,
                "gain_share": share, "category": kind, "cannot_certify": kind == "control",
                "certified": [f"p{i}" for i in range(certified)]}

    records = [record("a", False, True, 0.5, "personalized", 3), record("a", False, False, 0.0, "control", 0),
               record("b", True, True, math.nan, "arm", 1), {"variant": "b", "scenario": "s", "error": "boom"}]
    rows = {r["group"]: r for r in summarize(records)}
    a, b = rows["a"], rows["b"]
    assert a["experiments"] == 2 and a["exceed"] == 0 and a["family_exceed"] == 1 and a["mean_gain_share"] == 0.25
    assert a["mean_certified"] == 1.5 and a["personalized"] == 0.5 and a["control"] == 0.5 and a["cannot_certify"] == 0.5
    assert b["experiments"] == 1 and b["errors"] == 1 and b["exceed"] == 1 and math.isnan(b["mean_gain_share"])
    assert a["exceed_ci"][0] == 0.0 and 0.6 < a["exceed_ci"][1] < 0.7  # Wilson at 0 of 2
    by_both = summarize(records, ("variant", "scenario"))
    assert [r["group"] for r in by_both] == [("a", "s"), ("b", "s")]
    table = format_table(list(rows.values()))
    assert "0/2 0%" in table and "1/2 50%" in table and table.count("\n") == 3
    assert "every replay failed" in format_table(summarize([{"variant": "c", "error": "boom"}]))


def test_main_rejects_an_unknown_variant_and_an_empty_cache(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--variants", "nope", "--no-fit", "--cache", str(tmp_path)])
    assert "unknown variant 'nope'" in capsys.readouterr().err
    assert main(["--no-fit", "--cache", str(tmp_path)]) == 1
    assert "no fitted experiment" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_variants_replayed_on_one_cached_fit(tmp_path, capsys):
    cache = tmp_path / "cache"
    cases = plan([3000], 1, ["segment_harm"], seed=3)
    fitted = fit_all(cases, cache, truth_units=10_000)
    assert len(fitted) == 1 and (cache / "segment_harm-n3000-s3.pkl").exists()
    f = fitted[0]
    assert set(f.truth) == {p.name for p in f.policies} and f.oracle_gain > 0
    assert type(load_crossfit(f)).__name__ == "CrossFit"  # kept for screens computed anew

    records = evaluate(fitted, VARIANTS)
    by_variant = {r["variant"]: r for r in records}
    assert set(by_variant) == set(VARIANTS) and not any("error" in r for r in records)
    assert by_variant["graphical"]["matches_run"] is True  # the replay of the run's own settings is the run's
    assert all(by_variant[v]["matches_run"] is None for v in VARIANTS if v != "graphical")
    unscreened = by_variant["graphical/no-screen"]
    assert unscreened["screened_out"] == [] and set(unscreened["tested"]) == set(unscreened["order"])
    recipe = by_variant["graphical/recipe-order"]["order"]  # the value ladder first, safest step first
    ladder = [n for n in recipe if "-value" in n]
    assert recipe[:len(ladder)] == ladder and ladder[0].endswith("-value-p99")
    for r in records:  # the measured truth is the cached truth of the policy recommended
        assert r["harm"] == f.truth[r["policy"]]["harm"] and r["exceeds"] == bool(f.truth[r["policy"]]["exceeds"])
        assert set(r["certified_truth"]) == set(r["certified"])

    # a later run replays the cache without refitting and gets the same records
    assert fit_all(cases, cache)[0].run == f.run and cached(cache)[0].run == f.run  # read back, not refitted
    out = tmp_path / "out.json"
    assert main(["--no-fit", "--cache", str(cache), "--variants", "gated,step-down", "--variant",
                 'mine={"certification": "fixed-sequence", "screen": {}}', "--out", str(out)]) == 0
    payload = json.loads(out.read_text())
    again = {r["variant"]: r for r in payload["records"]}
    assert set(again) == {"gated", "step-down", "mine"}
    for name in ("gated", "step-down"):
        assert again[name]["policy"] == by_variant[name]["policy"] and again[name]["certified"] == by_variant[name]["certified"]
    assert "gated" in capsys.readouterr().out
