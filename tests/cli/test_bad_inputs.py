"""Bad inputs to `pex ingest SPEC`: a table of broken specs and data files.

Every case must fail the same way (README, "Command line"): exit code 2, a
one-line ``error:`` naming the problem, a ``hint:``, no traceback, and the
workspace exactly as it was before (validation happens before the store is
touched).

Each case starts from a 2,000-row copy of the simulated experiment, ingests it
once unmodified so the workspace holds real state, snapshots the workspace,
breaks the spec or the data, ingests again and compares.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from tests.shared import snapshot

N_ROWS = 2_000
SPEC = "exp.toml"
DATA = "exp.csv"
TEXT = {"user_id": "string", "arm": "string"}


# -- helpers ---------------------------------------------------------------------------


def shrink(d: Path) -> Path:
    """Cut the experiment copy in ``d`` to its first N_ROWS rows; return the spec path."""
    frame = pd.read_csv(d / DATA, dtype=TEXT, nrows=N_ROWS)
    frame.to_csv(d / DATA, index=False)
    return d / SPEC


def read(d: Path) -> pd.DataFrame:
    return pd.read_csv(d / DATA, dtype=TEXT)


def write(d: Path, frame: pd.DataFrame, **kwargs) -> None:
    frame.to_csv(d / DATA, index=False, **kwargs)


def edit_spec(d: Path, old: str, new: str) -> None:
    """Replace one exact occurrence of ``old`` in the spec (fails loudly when absent)."""
    text = (d / SPEC).read_text(encoding="utf-8")
    assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times in the spec"
    (d / SPEC).write_text(text.replace(old, new), encoding="utf-8")


def add_top_key(d: Path, line: str) -> None:
    """Add a top-level key (it must go before the first [table])."""
    edit_spec(d, 'control = "control"\n', f'control = "control"\n{line}\n')


def set_cells(column: str, rows: list[int], value: object) -> Callable[[Path], None]:
    def apply(d: Path) -> None:
        frame = read(d)
        frame[column] = frame[column].astype(object)
        frame.loc[rows, column] = value
        write(d, frame)
    return apply


def drop_column(column: str) -> Callable[[Path], None]:
    def apply(d: Path) -> None:
        write(d, read(d).drop(columns=[column]))
    return apply


def drop_arm(arm: str) -> Callable[[Path], None]:
    def apply(d: Path) -> None:
        frame = read(d)
        write(d, frame[frame["arm"] != arm])
    return apply


def spec_edit(old: str, new: str) -> Callable[[Path], None]:
    return lambda d: edit_spec(d, old, new)


# -- data breakages --------------------------------------------------------------------


def duplicate_unit_ids(d: Path) -> None:
    frame = read(d)
    frame.loc[[5, 9], "user_id"] = frame.loc[0, "user_id"]
    write(d, frame)


def relabel_some_arms(d: Path) -> None:
    frame = read(d)
    frame.loc[[3, 4, 5], "arm"] = "monthly"
    write(d, frame)


def empty_file(d: Path) -> None:
    (d / DATA).write_bytes(b"")


def header_only(d: Path) -> None:
    header = (d / DATA).read_text(encoding="utf-8").splitlines()[0]
    (d / DATA).write_text(header + "\n", encoding="utf-8")


def semicolons(d: Path) -> None:
    write(d, read(d), sep=";")


def utf16(d: Path) -> None:
    write(d, read(d), encoding="utf-16")


def latin1(d: Path) -> None:
    frame = read(d)
    frame.loc[7, "country"] = "Österreich"
    write(d, frame, encoding="latin-1")


def ragged_row(d: Path) -> None:
    lines = (d / DATA).read_text(encoding="utf-8").splitlines()
    lines[10] += ",surplus,fields"
    (d / DATA).write_text("\n".join(lines) + "\n", encoding="utf-8")


def duplicate_header(d: Path) -> None:
    # A second column named 'sessions' (an export that joined the metric twice).
    frame = read(d)
    frame.insert(len(frame.columns), "sessions_again", frame["sessions"] + 1)
    write(d, frame.rename(columns={"sessions_again": "sessions"}))
    header = (d / DATA).read_text(encoding="utf-8").splitlines()[0]
    assert header.split(",").count("sessions") == 2, header


def inf_in_pre_period(d: Path) -> None:
    frame = read(d)
    frame.loc[12, "sessions_pre"] = float("inf")
    write(d, frame)


def parquet_named_csv(d: Path) -> None:
    read(d).to_parquet(d / "tmp.parquet", index=False)
    (d / "tmp.parquet").replace(d / DATA)


def corrupt_parquet(d: Path) -> None:
    (d / "exp.parquet").write_bytes(b"this is not parquet\x00\x01\x02 at all" * 40)
    edit_spec(d, 'data = "exp.csv"', 'data = "exp.parquet"')


def truncated_parquet(d: Path) -> None:
    read(d).to_parquet(d / "exp.parquet", index=False)
    raw = (d / "exp.parquet").read_bytes()
    (d / "exp.parquet").write_bytes(raw[: len(raw) // 2])
    edit_spec(d, 'data = "exp.csv"', 'data = "exp.parquet"')


def missing_data_file(d: Path) -> None:
    (d / DATA).unlink()


def propensity_above_one(d: Path) -> None:
    frame = read(d)
    frame["p"] = 0.34
    frame.loc[[2, 20, 200], "p"] = 1.5
    write(d, frame)
    add_top_key(d, 'propensity = "p"')


def spec_is_directory(d: Path) -> None:
    (d / SPEC).unlink()
    (d / SPEC).mkdir()


def spec_missing(d: Path) -> None:
    (d / SPEC).unlink()


def spec_not_utf8(d: Path) -> None:
    text = (d / SPEC).read_text(encoding="utf-8")
    text = text.replace('owner = "pex-simulate"', 'owner = "Équipe croissance"')
    (d / SPEC).write_bytes(text.encode("latin-1"))


# -- the table -------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    breakage: Callable[[Path], None]
    error: str  # regex searched in the first stderr line (after "error: ")
    hint: str = ""  # optional regex searched in the hint line


def case(id: str, breakage, error: str, hint: str = "", xfail: str | None = None):
    marks = [pytest.mark.xfail(strict=True, reason=xfail)] if xfail else []
    return pytest.param(Case(breakage, error, hint), id=id, marks=marks)


CASES = [
    # --- data: columns
    case("missing-metric-column", drop_column("sessions"),
         r"column 'sessions' \(spec 'metrics\.sessions'\) is not in exp\.csv"),
    case("missing-unit-column", drop_column("user_id"),
         r"column 'user_id' \(spec 'unit'\) is not in exp\.csv"),
    case("missing-arm-column", drop_column("arm"),
         r"column 'arm' \(spec 'arm'\) is not in exp\.csv"),
    case("missing-pre-period-column", drop_column("sessions_pre"),
         r"column 'sessions_pre' \(spec 'metrics\.sessions\.pre'\) is not in"),
    case("duplicate-column-header", duplicate_header,
         r"'sessions' more than once"),
    # --- data: rows
    case("duplicate-unit-ids", duplicate_unit_ids,
         r"unit id column 'user_id' repeats 1 id.*'u0000000'"),
    case("unknown-arm-label", relabel_some_arms,
         r"labels not in the spec's allocation: 'monthly' \(3 rows", hint=r"\[allocation\]"),
    case("no-control-rows", drop_arm("control"),
         r"no rows have the control arm 'control' in column 'arm'"),
    case("arm-never-run", drop_arm("weekly"),
         r"arm 'weekly' has 0 units"),
    case("text-in-metric", set_cells("sessions", [3, 8], "lots"),
         r"metric column 'sessions' has 2 non-numeric values \(rows 4, 9: 'lots', 'lots'\)"),
    case("inf-in-metric", set_cells("sessions", [6], float("inf")),
         r"infinite metric 'sessions': 1 row\b", hint=r"--drop-invalid"),
    case("inf-in-pre-period", inf_in_pre_period,
         r"pre-period column 'sessions_pre' has infinite values"),
    case("missing-metric-values", set_cells("converted", [1, 2, 3], None),
         r"3 of 2,000 rows in exp\.csv are invalid - missing metric 'converted': 3 rows", hint=r"--drop-invalid"),
    case("nan-arm", set_cells("arm", [0, 11], None),
         r"missing arm \('arm'\): 2 rows \(e\.g\. rows 1, 12\)", hint=r"--drop-invalid"),
    case("missing-unit-id", set_cells("user_id", [4], None),
         r"missing unit id \('user_id'\): 1 row\b"),
    case("propensity-above-one", propensity_above_one,
         r"propensity column 'p' has 3 values outside \(0, 1\]"),
    # --- data: file format
    case("empty-file", empty_file, r"data file exp\.csv is empty"),
    case("header-only", header_only, r"exp\.csv has a header but no data rows"),
    case("semicolon-delimiter", semicolons, r"separated by semicolons, not commas"),
    case("utf16-encoded", utf16, r"exp\.csv is not UTF-8 text.*UTF-16", hint=r"UTF-8"),
    case("latin1-encoded", latin1, r"exp\.csv is not UTF-8 text \(byte \d+ cannot be decoded\)"),
    case("ragged-row", ragged_row, r"exp\.csv is not a well-formed CSV",
         hint=r"same number of comma-separated fields"),
    case("parquet-named-csv", parquet_named_csv, r"exp\.csv is Parquet but named like a CSV"),
    case("corrupt-parquet", corrupt_parquet, r"exp\.parquet is not a readable Parquet file"),
    case("truncated-parquet", truncated_parquet, r"exp\.parquet is not a readable Parquet file"),
    case("missing-data-file", missing_data_file,
         r"data file not found: .*exp\.csv \(spec key 'data' = 'exp\.csv'\)"),
    # --- spec
    case("typo-key-contrl", spec_edit('control = "control"', 'contrl = "control"'),
         r"unknown spec key 'contrl'", hint=r"did you mean 'control'"),
    case("typo-metric-key", spec_edit("max_harm = 0.05", "maxharm = 0.05"),
         r"unknown spec key 'metrics\.unsubscribes\.maxharm'", hint=r"did you mean 'max_harm'"),
    case("unknown-goal", spec_edit('goal = "increase"\nrole = "primary"', 'goal = "maximize"\nrole = "primary"'),
         r"spec key 'metrics\.sessions\.goal' = 'maximize' is not one of"),
    case("unknown-role", spec_edit('role = "secondary"', 'role = "tertiary"'),
         r"spec key 'metrics\.converted\.role' = 'tertiary' is not one of"),
    case("control-not-in-allocation", spec_edit('control = "control"', 'control = "baseline"'),
         r"spec key 'control' = 'baseline' is not among the arms in 'allocation'"),
    case("negative-max-harm", spec_edit("max_harm = 0.05", "max_harm = -0.05"),
         r"spec key 'metrics\.unsubscribes\.max_harm' = -0\.05 is negative"),
    case("max-harm-wrong-type", spec_edit("max_harm = 0.05", 'max_harm = "5%"'),
         r"spec key 'metrics\.unsubscribes\.max_harm' must be a number, got '5%'"),
    case("guardrail-without-max-harm", spec_edit("max_harm = 0.05\n", ""),
         r"guardrail metric 'unsubscribes' has no max_harm"),
    case("invalid-toml", spec_edit('unit = "user_id"', "unit = user_id"),
         r"exp\.toml is not valid TOML", hint=r"quot"),
    case("allocation-not-summing-to-1", spec_edit("control = 0.34", "control = 0.5"),
         r"spec 'allocation' shares add up to 1\.16, not 1", hint=r"add up to 1"),
    case("allocation-in-percent",
         lambda d: [edit_spec(d, f"{a} = 0.{p}", f"{a} = {p}") for a, p in (("control", 34), ("daily", 33), ("weekly", 33))],
         r"spec 'allocation' shares add up to 100, not 1", hint=r"fractions, not percentages"),
    case("features-include-arm-column", lambda d: add_top_key(d, 'features = ["age", "arm"]'),
         r"spec key 'features' includes 'arm'"),
    case("features-wrong-type", lambda d: add_top_key(d, 'features = "age"'),
         r"spec key 'features' must be a list of column names, got 'age'"),
    case("feature-not-in-data", lambda d: add_top_key(d, 'features = ["age", "tenure"]'),
         r"column 'tenure' \(spec 'features'\) is not in exp\.csv", hint=r"did you mean 'tenure_days'"),
    case("unit-wrong-type", spec_edit('unit = "user_id"', "unit = 7"),
         r"spec key 'unit' must be a non-empty string, got 7"),
    case("missing-required-key", spec_edit('arm = "arm"\n', ""),
         r"spec is missing required key 'arm'"),
    case("invalid-experiment-name", spec_edit('name = "exp"', 'name = "My Experiment"'),
         r"spec key 'name' = 'My Experiment' is not a valid experiment name"),
    case("data-not-csv-or-parquet", spec_edit('data = "exp.csv"', 'data = "exp.xlsx"'),
         r"spec key 'data' = 'exp\.xlsx' is neither CSV nor Parquet"),
    case("spec-not-utf8", spec_not_utf8, r"spec file .*exp\.toml is not UTF-8 text"),
    case("spec-file-missing", spec_missing, r"spec file not found: .*exp\.toml"),
    case("spec-is-a-directory", spec_is_directory, r"exp\.toml.* is a directory"),
]


@pytest.mark.parametrize("bad", CASES)
def test_bad_ingest_fails_cleanly_and_leaves_store_unchanged(bad: Case, exp_dir: Path, home: Path, run) -> None:
    spec = shrink(exp_dir)
    good = run("ingest", spec)
    assert good.code == 0, good
    before = snapshot(home)
    assert before, "the good ingest should have written the workspace"

    bad.breakage(exp_dir)
    result = run("ingest", spec)

    assert result.code == 2, result
    assert "Traceback" not in result.out and "Traceback" not in result.err
    lines = result.err.splitlines()
    assert lines, result
    assert lines[0].startswith("error: "), result.err
    assert re.search(bad.error, lines[0]), f"{bad.error!r} not in {lines[0]!r}"
    hints = [line for line in lines if line.startswith("hint: ")]
    assert hints and hints[0].strip() != "hint:", result.err
    if bad.hint:
        assert re.search(bad.hint, hints[0]), f"{bad.hint!r} not in {hints[0]!r}"
    assert snapshot(home) == before


def test_utf8_bom_csv_is_accepted(exp_dir: Path, run) -> None:
    """Excel's 'CSV UTF-8' export starts with a byte-order mark; the utf16 hint recommends exactly that."""
    spec = shrink(exp_dir)
    write(exp_dir, read(exp_dir), encoding="utf-8-sig")
    assert (exp_dir / DATA).read_bytes().startswith(b"\xef\xbb\xbf")
    result = run("ingest", spec)
    assert result.code == 0, result


# -- the real console script -----------------------------------------------------------

PEX = Path(sys.executable).parent / "pex"


def pex(home: Path, *args: object) -> subprocess.CompletedProcess:
    return subprocess.run([str(PEX), "--home", str(home), *map(str, args)],
                          capture_output=True, text=True, timeout=60)


SCRIPT_CASES = [
    pytest.param(spec_edit('control = "control"', 'contrl = "control"'), r"unknown spec key 'contrl'", id="typo-key-contrl"),
    # the console script's error path is the same for every error (the in-process tests above cover each one): one
    # case in make test, the others in make test-slow (a console script costs seconds to start)
    pytest.param(set_cells("sessions", [3, 8], "lots"), r"metric column 'sessions' has 2 non-numeric", id="text-in-metric",
                 marks=pytest.mark.slow),
    pytest.param(corrupt_parquet, r"not a readable Parquet file", id="corrupt-parquet", marks=pytest.mark.slow),
]


@pytest.mark.parametrize(("breakage", "error"), SCRIPT_CASES)
def test_console_script_prints_one_line_error_and_hint(breakage, error, exp_dir: Path, home: Path, run) -> None:
    assert PEX.is_file(), f"console script not installed at {PEX}"
    spec = shrink(exp_dir)
    assert run("ingest", spec).code == 0
    before = snapshot(home)
    breakage(exp_dir)

    proc = pex(home, "ingest", spec)

    assert proc.returncode == 2, proc
    assert "Traceback" not in proc.stdout and "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 2, proc.stderr
    assert lines[0].startswith("error: ") and re.search(error, lines[0]), proc.stderr
    assert lines[1].startswith("hint: ") and len(lines[1]) > len("hint: "), proc.stderr
    assert snapshot(home) == before


def test_console_script_verbose_shows_traceback(exp_dir: Path, home: Path) -> None:
    spec = shrink(exp_dir)
    edit_spec(exp_dir, 'control = "control"', 'contrl = "control"')

    proc = pex(home, "--verbose", "ingest", spec)

    assert proc.returncode == 2, proc
    assert "Traceback (most recent call last)" in proc.stderr
    assert "SpecError" in proc.stderr
    assert re.search(r"^error: unknown spec key 'contrl'$", proc.stderr, re.MULTILINE)
    assert re.search(r"^hint: ", proc.stderr, re.MULTILINE)


# -- --drop-invalid --------------------------------------------------------------------

DROPPABLE = [
    pytest.param(set_cells("converted", [1, 2, 3], None), 3, "missing metric 'converted'", id="missing-metric-values"),
    pytest.param(set_cells("arm", [0, 11], None), 2, "missing arm ('arm')", id="nan-arm"),
    pytest.param(set_cells("sessions", [6], float("inf")), 1, "infinite metric 'sessions'", id="inf-in-metric"),
]


@pytest.mark.parametrize(("breakage", "n_bad", "label"), DROPPABLE)
def test_drop_invalid_turns_invalid_rows_into_a_counted_success(breakage, n_bad: int, label: str, exp_dir: Path, run) -> None:
    spec = shrink(exp_dir)
    breakage(exp_dir)
    assert run("ingest", spec).code == 2

    plain = run("ingest", spec, "--drop-invalid")
    assert plain.code == 0, plain
    assert f"{N_ROWS - n_bad:,} units" in plain.out
    assert re.search(rf"dropped {n_bad} invalid rows: {re.escape(label)} \({n_bad}\)", plain.out), plain.out

    as_json = run("ingest", spec, "--drop-invalid", "--json")
    assert as_json.code == 0, as_json
    doc = json.loads(as_json.out)
    assert doc["n_dropped"] == n_bad
    assert doc["n_units"] == N_ROWS - n_bad
    assert doc["dataset"]["n_dropped"] == n_bad
    assert doc["dataset"]["n_rows_read"] == N_ROWS
    assert doc["dataset"]["dropped"] == {label: n_bad}
