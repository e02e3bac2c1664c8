"""The upload service behind the UI's "New experiment" page: stage, propose, check, create; errors on their field,
nothing stored until the spec and its data validate."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import pytest

from pex.errors import DataError, NotFoundError, PexError, SpecError
from pex.experiment.simulate import simulate
from pex.services import upload
from pex.store.workspace import Workspace


@pytest.fixture(scope="module")
def csv_bytes() -> bytes:
    return simulate(1_200, scenario="segment_harm", seed=7).data.to_csv(index=False).encode()


@pytest.fixture
def ws(home):
    with Workspace(home) as workspace:
        yield workspace


def _stored(home: Path) -> dict[str, object]:
    """What a failed create must leave as it was: the experiments (rows and folders)."""
    with Workspace(home) as workspace:
        rows = workspace.list_experiments()
    folder = upload.experiments_dir(home)
    return {"rows": rows, "folders": sorted(p.name for p in folder.iterdir()) if folder.exists() else []}


def test_stage_propose_check_create(home, ws, csv_bytes):
    staged = upload.stage(home, "Checkout Offer.csv", io.BytesIO(csv_bytes))
    assert staged.filename == "Checkout Offer.csv" and staged.n_rows == 1_200
    columns = {c["name"]: c for c in staged.columns}
    assert columns["arm"]["n_distinct"] == 2 and columns["arm"]["dtype"] == "text"
    assert columns["revenue"]["dtype"] == "number" and columns["age"]["n_missing"] > 0
    assert len(staged.preview) == 5 and staged.preview[0]["user_id"] == "u0000000"
    assert upload.staged(home, staged.id) == staged

    proposal = upload.propose(home, staged.id)
    spec = proposal["spec"]
    assert spec["name"] == "checkout_offer" and spec["metrics"]["complaints"]["role"] == "guardrail"
    assert upload.check(home, staged.id, spec, ws) == []
    assert _stored(home) == {"rows": [], "folders": []}  # checking stores nothing

    created = upload.create(ws, home, staged.id, spec, "token:alice")
    assert (created.experiment, created.dataset_version, created.n_units) == ("checkout_offer", 1, 1_200)
    assert created.analysis["srm"]["ok"] in (True, False) and created.analysis["effects"]
    assert sorted(p.name for p in created.spec_path.parent.iterdir()) == ["data.csv", "spec.toml"]
    assert (created.spec_path.parent / "data.csv").read_bytes() == csv_bytes
    [row] = ws.list_experiments()
    assert (row["name"], row["current_version"], row["n_units"]) == ("checkout_offer", 1, 1_200)
    version = ws.dataset_version("checkout_offer")
    assert "token:alice" in version.source and "Checkout Offer.csv" in version.source
    assert ws.latest_analysis("checkout_offer") is not None
    # the staged upload is gone once used
    with pytest.raises(NotFoundError, match="this upload is gone"):
        upload.staged(home, staged.id)

    # the same name again is refused on its field, with the way to add a version instead
    again = upload.stage(home, "x.csv", csv_bytes)
    [error] = upload.check(home, again.id, spec, ws)
    assert error.field == "name" and "exists already" in error.message and "pex ingest" in error.hint
    with pytest.raises(SpecError, match="exists already"):
        upload.create(ws, home, again.id, spec, "token:alice")
    # a name the UI's own page takes (/ui/experiments/new) is refused on the same field
    [error] = upload.check(home, again.id, {**spec, "name": "new"}, ws)
    assert error.field == "name" and "the UI's own page" in error.message


@pytest.mark.parametrize(("change", "field", "message"), [
    (lambda s: s["metrics"]["complaints"].update(max_harm=-1), "metrics.complaints.max_harm", "is negative"),
    (lambda s: s.update(control="nope"), "control", "'nope' is not among the arms"),
    (lambda s: (s.pop("allocation"), s.update(control="nope")), "control", "no rows have the control arm 'nope'"),
    (lambda s: s.update(unit="arm"), "arm", "both name column 'arm'"),
    (lambda s: s.update(unit="country", features=["age"]), "unit", "unit id column 'country' repeats"),
    (lambda s: s["metrics"]["revenue"].update(role="guardrail"), "metrics.revenue.max_harm", "has no max_harm"),
    (lambda s: (s["metrics"]["revenue"].update(column="platform"), s.update(features=["age"])), "metrics.revenue",
     "metric column 'platform' has 1,1"),
    (lambda s: s["metrics"]["revenue"].update(pre="nothing"), "metrics.revenue.pre", "'nothing' (spec 'metrics.revenue.pre') is not in"),
    (lambda s: s.update(features=["age", "complaints"]), "features", "includes 'complaints'"),
    (lambda s: s.update(allocation={"control": 0.5, "treat": "half"}), "allocation.treat", "must be a number"),
    (lambda s: s.update(name="Bad Name"), "name", "is not a valid experiment name"),
])
def test_a_deliberate_error_is_reported_on_its_field_and_nothing_is_stored(home, ws, csv_bytes, change, field, message):
    staged = upload.stage(home, "offer.csv", csv_bytes)
    spec = upload.propose(home, staged.id)["spec"]
    change(spec)
    [error] = upload.check(home, staged.id, spec, ws)
    assert (error.field, message in error.message) == (field, True), error
    assert error.hint
    before = _stored(home)
    with pytest.raises(PexError) as raised:
        upload.create(ws, home, staged.id, spec, "token:alice")
    assert raised.value.field == field
    assert _stored(home) == before == {"rows": [], "folders": []}
    assert upload.staged(home, staged.id).id == staged.id  # kept, to be corrected and tried again


def test_the_form_round_trip_carries_a_correction(home, ws, csv_bytes):
    staged = upload.stage(home, "offer.csv", csv_bytes)
    spec = upload.propose(home, staged.id)["spec"]
    form = upload.spec_to_form(spec)
    assert form["unit"] == "user_id" and form["metrics"] == ["revenue", "complaints"]
    assert form["metrics.complaints.max_harm"] == "0.05" and form["allocation.treat"] == "0.5"
    assert upload.form_to_spec(form) == {k: v for k, v in spec.items() if k != "data"}
    # a browser's multi-valued form: every value a list; the owner sets a wrong share, then fixes it
    submitted = {k: v if isinstance(v, list) else [v] for k, v in form.items()}
    submitted["allocation.treat"] = ["half"]
    [error] = upload.check(home, staged.id, upload.form_to_spec(submitted), ws)
    assert error.field == "allocation.treat" and error.field in form
    submitted["allocation.treat"] = ["0.5"]
    submitted["metrics.complaints.max_harm"] = ["0.1"]
    submitted["features"] = ["age", "platform", "country"]
    fixed = upload.form_to_spec(submitted)
    assert fixed["metrics"]["complaints"]["max_harm"] == 0.1 and fixed["features"] == ["age", "platform", "country"]
    created = upload.create(ws, home, staged.id, fixed, "token:bob")
    stored = ws.load_dataset_spec(ws.dataset_version(created.experiment).id)
    assert stored.metrics["complaints"].max_harm == 0.1 and stored.features == ("age", "platform", "country")


def test_an_uploaded_spec_file_instead_of_the_form(home, ws, csv_bytes):
    staged = upload.stage(home, "offer.csv", csv_bytes)
    text = """name = "from_file"\ndata = "elsewhere.csv"\nunit = "user_id"\narm = "arm"\ncontrol = "control"\n
[metrics.revenue]\ngoal = "increase"\n"""
    spec = upload.spec_from_toml(text.encode())
    assert upload.check(home, staged.id, spec, ws) == []  # its data entry is replaced by the upload
    assert upload.create(ws, home, staged.id, spec, "token:alice").experiment == "from_file"
    with pytest.raises(SpecError, match="not valid TOML") as err:
        upload.spec_from_toml('name = "x\n')
    assert err.value.field == "spec_file"


@pytest.mark.parametrize("upload_id", ["../../etc", "..", "0" * 31, "0" * 32 + "/..", "G" * 32, "", "A" * 32])
def test_ids_that_are_not_random_hex_are_refused(home, upload_id):
    (home / "uploads").mkdir(parents=True)
    with pytest.raises(NotFoundError, match="no such upload"):
        upload.staged(home, upload_id)


def test_an_oversized_upload_is_refused_and_leaves_nothing(home, csv_bytes):
    with pytest.raises(DataError, match="larger than the upload limit of 0 MiB") as err:
        upload.stage(home, "big.csv", io.BytesIO(csv_bytes), max_bytes=1_000)
    assert "PEX_UI_MAX_UPLOAD" in err.value.hint and err.value.field == "file"
    with pytest.raises(DataError, match="larger than the upload limit"):
        upload.stage(home, "big.csv", csv_bytes, max_bytes=len(csv_bytes) - 1)
    assert list((home / "uploads").iterdir()) == []
    assert upload.stage(home, "big.csv", csv_bytes, max_bytes=len(csv_bytes)).n_rows == 1_200


@pytest.mark.parametrize(("filename", "data", "message"), [
    ("offer.xlsx", b"PK\x03\x04", "neither a CSV nor a Parquet file"),
    ("offer", b"a,b\n1,2\n", "neither a CSV nor a Parquet file"),
    ("offer.csv", b"", "is empty"),
    ("offer.csv", b"user_id,arm\n", "has a header but no rows"),
    ("offer.csv", "user_id,arm\nü,x\n".encode("utf-16"), "not UTF-8 text"),
    ("offer.parquet", b"not parquet at all", "not a readable Parquet file"),
])
def test_files_that_are_not_tables_are_refused_on_the_file_field(home, filename, data, message):
    with pytest.raises(DataError, match=message) as err:
        upload.stage(home, filename, data)
    assert err.value.field == "file"
    assert not (home / "uploads").exists() or list((home / "uploads").iterdir()) == []


def test_parquet_uploads_and_folder_names_in_the_file_name(home, ws, tmp_path):
    frame = simulate(600, scenario="aligned_harm", seed=2).data
    frame.to_parquet(tmp_path / "t.parquet", index=False)
    staged = upload.stage(home, "../../Upsell Test.parquet", (tmp_path / "t.parquet").read_bytes())
    assert staged.filename == "Upsell Test.parquet" and staged.path.name == "data.parquet"
    spec = upload.propose(home, staged.id, name="upsell")["spec"]
    assert spec["metrics"]["churned"]["role"] == "guardrail"
    created = upload.create(ws, home, staged.id, spec, "token:alice")
    assert (created.spec_path.parent / "data.parquet").is_file() and created.n_units == 600


def test_cleanup_removes_abandoned_uploads_only(home, csv_bytes):
    old = upload.stage(home, "old.csv", csv_bytes)
    fresh = upload.stage(home, "fresh.csv", csv_bytes)
    day_ago = time.time() - 25 * 3600
    os.utime(old.path.parent, (day_ago, day_ago))
    assert upload.cleanup(home, max_age_hours=24) == 1
    assert upload.staged(home, fresh.id).id == fresh.id
    with pytest.raises(NotFoundError):
        upload.staged(home, old.id)
    assert upload.cleanup(home / "nowhere") == 0


def test_form_to_spec_keeps_what_it_cannot_read_for_the_check():
    spec = upload.form_to_spec({"name": " x ", "unit": "u", "arm": "a", "control": "c", "propensity": "", "features": [],
                                "allocation.c": "", "metrics": ["m"], "metrics.m.goal": "increase",
                                "metrics.m.max_harm": "lots", "metrics.m.pre": ""})
    assert spec == {"name": "x", "unit": "u", "arm": "a", "control": "c",
                    "metrics": {"m": {"goal": "increase", "max_harm": "lots"}}}
    # metric rows the owner did not tick are not metrics
    spec = upload.form_to_spec({"metrics": ["m"], "metrics.m.goal": "increase", "metrics.other.goal": "decrease"})
    assert list(spec["metrics"]) == ["m"]
