"""Every malformed config gets one clear error naming the culprit, from a dry run (so
before any work is done); data problems found only at run time fail the first, cheap job."""

from __future__ import annotations

import copy

import pandas as pd
import pytest

from ptmech import config as ptcfg
from ptmech import data
from workflow import copy_workflow, dry_run_error, snakemake

pytestmark = pytest.mark.workflow

BASE = {
    "models": {
        "m1": {"path": "models/m1", "family": "f", "role": "base"},
        "m2": {"path": "some-org/some-hub-model", "family": "f", "role": "instruct"},
    },
    "datasets": {"st": {"path": "st.csv", "kind": "statements"}},
    "prompt_sets": {"statements": {"kind": "statements", "positions": "last", "datasets": ["st"]}},
}


@pytest.fixture(scope="module")
def wd(tmp_path_factory):
    wd = copy_workflow(tmp_path_factory.mktemp("bad"))
    (wd / "models" / "m1").mkdir(parents=True)
    (wd / "st.csv").write_text("statement,label\na b .,1\n")
    (wd / "nolabel.csv").write_text("statement,truth\na b .,1\n")
    return wd


def _with(**changes):
    cfg = copy.deepcopy(BASE)
    for dotted, value in changes.items():
        node = cfg
        *parents, last = dotted.split("__")
        for p in parents:
            node = node[p]
        if value is None:
            del node[last]
        else:
            node[last] = value
    return cfg


def test_the_valid_base_config_dry_runs(wd):
    proc = snakemake(wd, "--dry-run", config=BASE)
    assert "extract" in proc.stdout


@pytest.mark.parametrize("cfg,needles", [
    (_with(models__m1__famly="f"), ["config key models.m1:", "'famly' was unexpected"]),             # unknown key
    (_with(bogus_section={}), ["bogus_section"]),                             # unknown top-level key
    (_with(models__m1__batch_size="big"), ["config key models.m1.batch_size:", "'big' is not of type 'integer'"]),                # wrong type
    (_with(models__m1__role=None), ["config key models.m1:", "'role' is a required property"]),                     # missing key
    (_with(pairs=[["m1", "m3"]]), ["pairs[0]", "'m3'", "not defined"]),       # model referenced, undefined
    (_with(prompt_sets__statements__datasets=["st", "cities"]),
     ["prompt_sets.statements.datasets", "'cities'", "not defined"]),         # dataset referenced, undefined
    (_with(datasets__st__path="missing.csv"), ["datasets.st.path", "missing.csv", "does not exist"]),
    (_with(datasets__st__path="nolabel.csv"), ["datasets.st", "nolabel.csv", "'label'"]),  # column missing
    (_with(datasets__st__columns={"label": "verdict"}), ["datasets.st", "'verdict'"]),      # mapped column missing
    (_with(models__m1__path="./no/such/folder"), ["models.m1.path", "no/such/folder"]),     # local model missing
    (_with(prompt_sets__statements__positions=[0]), ["config key prompt_sets.statements.positions"]),           # positions must be negative
])
def test_malformed_config_fails_the_dry_run_naming_the_culprit(wd, cfg, needles):
    text = dry_run_error(wd, cfg)
    for needle in needles:
        assert needle in text, f"{needle!r} not in error output:\n{text[-3000:]}"


def test_column_missing_in_a_generated_file_fails_the_dataset_job(wd, tmp_path):
    """Files that a rule makes are checked by the first job that reads them, which names
    the file and the column."""
    table = pd.DataFrame({"statement": ["x"], "truth": [1]})
    with pytest.raises(data.DatasetError, match=r"dataset 'st' \(made.csv\): missing column 'label'"):
        data.normalise("st", table, {"kind": "statements"}, "made.csv")


def test_bad_labels_are_named(tmp_path):
    table = pd.DataFrame({"statement": ["x", "y"], "label": ["1", "maybe"]})
    with pytest.raises(data.DatasetError, match="'maybe'"):
        data.normalise("st", table, {"kind": "statements"}, "f.csv")


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".json", ".parquet"])
def test_every_local_format_reads_and_normalises(tmp_path, suffix):
    table = pd.DataFrame({"text": ["a b .", "c d ."], "truth": ["TRUE", "false"], "extra": [1, 2]})
    path = tmp_path / f"d{suffix}"
    {".csv": lambda: table.to_csv(path, index=False),
     ".tsv": lambda: table.to_csv(path, sep="\t", index=False),
     ".jsonl": lambda: table.to_json(path, orient="records", lines=True),
     ".json": lambda: table.to_json(path, orient="records"),
     ".parquet": lambda: table.to_parquet(path)}[suffix]()
    spec = {"kind": "statements", "columns": {"statement": "text", "label": "truth"}}
    assert data.source_columns(str(path)) == ["text", "truth", "extra"]
    out = data.normalise("d", data.read_source("d", spec, str(path)), spec, str(path))
    assert out["statement"].tolist() == ["a b .", "c d ."]
    assert out["label"].tolist() == [1, 0]
    assert out["extra"].tolist() == [1, 2]


def test_model_pairs_and_directions():
    cfg = copy.deepcopy(BASE)
    cfg["models"]["m3"] = {"path": "x/y", "family": "other", "role": "base"}
    assert ptcfg.model_pairs(cfg) == [("m1", "m2"), ("m2", "m1")]
    assert ptcfg.direction(cfg, "m1", "m2") == "forward"
    assert ptcfg.direction(cfg, "m2", "m1") == "backward"
    cfg["pairs"] = [["m3", "m2"]]
    assert ptcfg.model_pairs(cfg) == [("m3", "m2")]


def test_an_empty_file_fails_the_dry_run_naming_key_and_file(wd):
    (wd / "empty.csv").write_text("")
    text = dry_run_error(wd, _with(datasets__st__path="empty.csv"))
    assert "datasets.st" in text and "empty.csv" in text and "empty (0 bytes)" in text, text[-2000:]


def test_a_bad_label_is_named_with_its_row_and_file():
    table = pd.DataFrame({"statement": ["a", "b", "c"], "label": ["1", "0", "maybe"]})
    with pytest.raises(data.DatasetError, match=r"dataset 'st' \(f\.csv\).*'maybe' in row 4 \(1 such rows\)"):
        data.normalise("st", table, {"kind": "statements"}, "f.csv")


def test_cleaning_is_never_silent():
    """Empty statements and statements labelled both ways are dropped, repeats kept, and
    each is reported with its count and rows."""
    table = pd.DataFrame({"statement": ["a", "", "b", "b", None, "c", "c", "d"],
                          "label": [1, 1, 0, 1, 0, 1, 1, 0]})
    said = []
    out = data.normalise("st", table, {"kind": "statements"}, "f.csv", warn=said.append)
    assert out["statement"].tolist() == ["a", "c", "c", "d"]
    assert out["label"].tolist() == [1, 1, 1, 0]
    assert len(said) == 3, said
    assert "dropped 2 of 8 rows with an empty statement (rows 3, 6)" in said[0]
    assert "dropped 2 rows of 1 statement(s) labelled both true and false, e.g. 'b' (rows 4, 5)" in said[1]
    assert "1 rows repeat an earlier statement with the same label (kept; rows 8)" in said[2]


def test_clean_data_is_not_warned_about():
    said = []
    data.normalise("st", pd.DataFrame({"statement": ["a", "b"], "label": [1, 0]}), {"kind": "statements"},
                   "f.csv", warn=said.append)
    assert said == []


def test_a_missing_folder_that_looks_like_a_hub_id_fails_the_dry_run(wd):
    """``models/zzz`` when a folder ``models/`` exists is a mistyped local path, not a hub id."""
    text = dry_run_error(wd, _with(models__m1__path="models/zzz"))
    assert "models.m1.path" in text and "'models/zzz' does not exist" in text and "./models/zzz" in text, text[-2000:]


def test_a_hub_model_missing_from_the_offline_cache_stops_a_real_run_before_any_job(wd):
    """With HF_HUB_OFFLINE=1 (the tests' setting) an uncached hub id is a warning in a dry
    run (no weights needed) and an error naming the key before any job in a real run."""
    proc = snakemake(wd, "--dry-run", config=BASE)
    assert "warning: models.m2.path: 'some-org/some-hub-model' is not a local folder" in proc.stderr
    proc = snakemake(wd, "results/data/st.tsv", config=BASE, check=False)
    assert proc.returncode != 0
    text = proc.stdout + proc.stderr
    assert "models.m2.path: 'some-org/some-hub-model'" in text and "hf download some-org/some-hub-model" in text
    assert not (wd / "results" / "data" / "st.tsv").exists()  # nothing ran


@pytest.mark.parametrize("argv,dry", [(["-n"], True), (["-np", "--cores", "2"], True), (["--dry-run"], True),
                                      (["--cores", "2", "all"], False), (["-p", "--configfile", "c.yaml"], False)])
def test_dry_runs_are_told_from_the_command_line(argv, dry):
    assert ptcfg.is_dry_run(argv) is dry
