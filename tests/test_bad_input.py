"""Every malformed config gets one clear error naming the culprit, from a dry run (so
before any work is done); data problems found only at run time fail the first, cheap job."""

from __future__ import annotations

import copy

import pandas as pd
import pytest

from ptmech import config as ptcfg
from ptmech import data
from workflow import copy_workflow, dry_run_error, snakemake, stub_model_folder

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
    stub_model_folder(wd / "models" / "m1")
    (wd / "st.csv").write_text("statement,label\na b .,1\n")
    (wd / "nolabel.csv").write_text("statement,truth\na b .,1\n")
    return wd


def _edited(base: dict, **changes) -> dict:
    """A copy of ``base`` with ``a__b__c=value`` set (None deletes the key)."""
    cfg = copy.deepcopy(base)
    for dotted, value in changes.items():
        node = cfg
        *parents, last = dotted.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        if value is None:
            del node[last]
        else:
            node[last] = value
    return cfg


def _with(**changes):
    return _edited(BASE, **changes)


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
    raw = data.read_source("d", spec, str(path))
    assert list(raw.columns) == ["text", "truth", "extra"]
    out = data.normalise("d", raw, spec, str(path))
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


@pytest.mark.parametrize("cfg,warning,needles", [
    (BASE, "warning: models.m2.path: 'some-org/some-hub-model' is not a local folder",
     ["models.m2.path: 'some-org/some-hub-model'", "hf download some-org/some-hub-model"]),
    (_with(models__m2=None, datasets__st={"hub": "some-org/some-data", "kind": "statements"}),
     "warning: datasets.st.hub: hub dataset 'some-org/some-data' is in neither the hub cache",
     ["datasets.st.hub: hub dataset 'some-org/some-data'", "hf download --repo-type dataset"]),
], ids=["hub model", "hub dataset"])
def test_a_hub_id_missing_from_the_offline_cache_stops_a_real_run_before_any_job(wd, cfg, warning, needles):
    """With HF_HUB_OFFLINE=1 (the tests' setting) an uncached hub model or dataset is a
    warning in a dry run (nothing is downloaded) and an error naming the key before any job
    in a real run."""
    assert warning in snakemake(wd, "--dry-run", config=cfg).stderr
    proc = snakemake(wd, "results/data/st.tsv", config=cfg, check=False)
    assert proc.returncode != 0
    text = proc.stdout + proc.stderr
    assert all(n in text for n in needles), text[-2000:]
    assert not (wd / "results" / "data" / "st.tsv").exists()  # nothing ran


@pytest.mark.parametrize("argv,dry", [(["-n"], True), (["-np", "--cores", "2"], True), (["--dry-run"], True),
                                      (["--cores", "2", "all"], False), (["-p", "--configfile", "c.yaml"], False)])
def test_dry_runs_are_told_from_the_command_line(argv, dry):
    assert ptcfg.is_dry_run(argv) is dry


# --- what a model's config.json says, checked when the workflow is parsed -------------------

def test_a_folder_without_config_json_is_not_a_model(wd):
    (wd / "models" / "empty").mkdir(parents=True, exist_ok=True)
    text = dry_run_error(wd, _with(models__m1__path="models/empty"))
    assert "models.m1.path: folder 'models/empty' has no config.json" in text, text[-2000:]


def test_an_unsupported_architecture_fails_the_dry_run(wd):
    """An architecture off the table is built on the meta device when the workflow is parsed
    and its layout discovered: BERT's causal LM has no final norm beside its blocks, T5 is an
    encoder-decoder; Granite, off the table too, is read."""
    stub_model_folder(wd / "models" / "bert", model_type="bert")
    text = dry_run_error(wd, _with(models__m1__path="models/bert"))
    assert "models.m1.path: model 'm1'" in text and "architecture 'bert'" in text, text[-2000:]
    assert "no final norm beside its decoder blocks" in text and "ARCHITECTURES" in text, text[-2000:]
    stub_model_folder(wd / "models" / "t5", model_type="t5")
    assert "an encoder-decoder model" in dry_run_error(wd, _with(models__m1__path="models/t5"))
    stub_model_folder(wd / "models" / "granite", model_type="granite")
    assert snakemake(wd, "--dry-run", config=_with(models__m1__path="models/granite")).returncode == 0


@pytest.mark.parametrize("layer_key, bad, good, allowed", [
    ("truth_probe", 3, 2, "1..2"), ("truth_probe", 0, 1, "1..2"),  # k = 0 is the embedding: no block output
    ("truth_intervene", 3, 2, "1..2"),
    ("refusal", 2, 1, "0..1"),  # the input of a block: k <= L - 1
])
def test_a_layer_past_the_models_blocks_fails_the_dry_run(wd, layer_key, bad, good, allowed):
    """m1 has 2 blocks, so its residual indices are k = 0..2; each key says which it takes."""
    text = dry_run_error(wd, _with(**{"models__m1__layers": {layer_key: bad}}))
    if bad == 0:  # below the schema's minimum: the schema's error names the key
        assert f"config key models.m1.layers.{layer_key}: 0 is less than the minimum of 1" in text, text[-2000:]
    else:
        assert (f"models.m1.layers.{layer_key}: k = {bad} is outside {allowed} for model 'm1', which has 2 blocks"
                in text), text[-2000:]
    proc = snakemake(wd, "--dry-run", config=_with(**{"models__m1__layers": {layer_key: good}}))
    assert proc.returncode == 0


def test_a_misspelt_layer_key_fails_the_dry_run(wd):
    """models.<m>.layers takes three keys; a typo would otherwise be ignored silently."""
    text = dry_run_error(wd, _with(models__m1__layers={"truth_prob": 1}))
    assert "config key models.m1.layers:" in text and "truth_prob" in text, text[-2000:]


def test_a_cached_residual_index_past_the_model_fails_the_dry_run(wd):
    text = dry_run_error(wd, _with(prompt_sets__statements__layers=[0, 3]))
    assert "prompt_sets.statements.layers: residual index 3 is past model 'm1', whose residual stream has k = 0..2" in text


# --- local dataset files: read in full when the workflow is parsed --------------------------

@pytest.mark.parametrize("name,content,needles", [
    ("ragged.csv", "statement,label\na,1\nb,0,extra\n", ["datasets.st:", "ragged.csv", "cannot be read as CSV", "line 3"]),
    ("broken.json", '[{"statement": "a", "label": 1}, ', ["datasets.st:", "broken.json", "cannot be read as JSON"]),
    ("table.xlsx", "not a csv", ["datasets.st:", "table.xlsx", "unsupported file type '.xlsx'"]),
    ("labels.csv", "statement,label\na,1\nb,maybe\n", ["datasets.st:", "labels.csv", "'maybe' in row 3"]),
    ("blank.csv", "statement,label\n,1\n  ,0\n", ["datasets.st:", "blank.csv", "no rows left"]),
])
def test_an_unreadable_dataset_file_fails_the_dry_run(wd, name, content, needles):
    (wd / name).write_text(content)
    text = dry_run_error(wd, _with(datasets__st__path=name))
    for needle in needles:
        assert needle in text, f"{needle!r} not in:\n{text[-2000:]}"


def test_a_prompt_set_given_a_dataset_of_the_other_kind_fails(wd):
    cfg = _with(datasets__st__kind="instructions", datasets__st__columns={"instruction": "statement"})
    text = dry_run_error(wd, cfg)
    assert "prompt_sets.statements.datasets: dataset 'st' is of kind 'instructions'" in text, text[-2000:]


def test_a_model_paired_with_itself_fails(wd):
    assert "pairs[0]: a model cannot be paired with itself ('m1')" in dry_run_error(wd, _with(pairs=[["m1", "m1"]]))


def test_a_syntax_error_in_the_config_file_stops_the_dry_run(wd):
    """Snakemake reads --configfile before the workflow is parsed, and its message names
    neither file nor line (docs/bad-input.md says how to find it); the run stops before any job."""
    (wd / "broken.yaml").write_text("models:\n  m1: {path: models/m1, family: f\n")
    proc = snakemake(wd, "--dry-run", "--configfile", "broken.yaml", check=False)
    assert proc.returncode != 0
    assert "Config file is not valid JSON or YAML" in proc.stdout + proc.stderr


# --- datasets too small for the settings that use them ---------------------------------------

def _statements(n_true: int, n_false: int) -> str:
    rows = [f"t{i} is x .,1" for i in range(n_true)] + [f"f{i} is y .,0" for i in range(n_false)]
    return "statement,label\n" + "\n".join(rows) + "\n"


SIZED = {
    "models": {"m1": {"path": "models/m1", "family": "f", "role": "base"}},
    "datasets": {"st": {"path": "st6.csv", "kind": "statements"}, "st2": {"path": "st6.csv", "kind": "statements"}},
    "prompt_sets": {"statements": {"kind": "statements", "positions": "last", "datasets": ["st", "st2"]}},
    "truth": {"steering": {"datasets": ["st"]}},
    "knowledge": {"enabled": False},
}


@pytest.fixture(scope="module")
def sized(wd):
    (wd / "st6.csv").write_text(_statements(3, 3))
    (wd / "onlytrue.csv").write_text(_statements(4, 0))
    (wd / "st2t.csv").write_text(_statements(2, 3))
    return wd


def _sized(**changes):
    return _edited(SIZED, **changes)


def test_datasets_large_enough_dry_run(sized):
    assert "truth_steer" in snakemake(sized, "--dry-run", config=_sized()).stdout


def test_one_held_out_set_needs_a_training_pool_without_it(sized):
    """The paper's protocol, one held-out set trained on the others, parses; a held-out set
    that is the whole training pool fails naming truth.train_datasets."""
    one = _sized(truth={"datasets": ["st"], "train_datasets": ["st2"], "steering": {"datasets": ["st"]}})
    assert "truth_probes" in snakemake(sized, "--dry-run", config=one).stdout
    text = dry_run_error(sized, _sized(truth={"datasets": ["st"], "train_datasets": ["st"],
                                              "steering": {"datasets": ["st"]}}))
    assert "truth.train_datasets: held out, dataset 'st' leaves no dataset to train the probes on" in text, text[-2000:]


@pytest.mark.parametrize("changes,needles", [
    # 6 demonstrations need 3 true, 3 false and one statement left to steer: 6 rows are too few
    ({"truth__steering__n_demos": 6}, ["truth.steering.n_demos: dataset 'st' (6 rows after cleaning) is too small",
                                      "6 demonstrations and a statement left to steer needs 7 rows"]),
    # 5 demonstrations: 3 true (the odd one) and 2 false, from 2 true and 3 false statements
    ({"datasets__st__path": "st2t.csv", "truth__steering__n_demos": 5},
     ["truth.steering.n_demos: dataset 'st' (5 rows after cleaning) has 2 true statements, "
      "5 demonstrations and a statement left to steer needs 3"]),
    ({"datasets__st2__path": "onlytrue.csv"}, ["truth.datasets: dataset 'st2'", "has 0 false statements",
                                               "a truth probe trained or tested on it needs 1"]),
])
def test_a_dataset_too_small_for_its_settings_fails_the_dry_run(sized, changes, needles):
    text = dry_run_error(sized, _sized(**changes))
    for needle in needles:
        assert needle in text, f"{needle!r} not in:\n{text[-2000:]}"


def test_a_dataset_too_small_for_knowledge_demonstrations_fails_the_dry_run(sized):
    cfg = _sized(knowledge={"datasets": ["st"], "skeletons": {"st": ["{subject} is {object} ."]},
                            "n_true_demos": 3, "n_false_demos": 1})
    text = dry_run_error(sized, cfg)
    assert "knowledge.n_true_demos: dataset 'st' (6 rows after cleaning) has 3 true statements" in text, text[-2000:]
    cfg["knowledge"]["n_true_demos"] = 2
    assert snakemake(sized, "--dry-run", config=cfg).returncode == 0


def _instructions_config(wd, models: dict, harmful: str = "many.csv") -> dict:
    """A refusal-only config over instruction files in ``wd`` (many.csv has 10 rows)."""
    (wd / "two.csv").write_text("instruction\nhow to a\nhow to b\n")
    (wd / "many.csv").write_text("instruction\n" + "".join(f"how to {i}\n" for i in range(10)))
    return {"models": models,
            "datasets": {"harmful": {"path": harmful, "kind": "instructions"},
                         "harmless": {"path": "many.csv", "kind": "instructions"}},
            "prompt_sets": {"instructions": {"kind": "instructions", "positions": "last",
                                             "datasets": ["harmful", "harmless"]}}}


def test_instructions_too_few_for_every_split_fail_the_dry_run(sized):
    cfg = _instructions_config(sized, SIZED["models"], harmful="two.csv")
    text = dry_run_error(sized, cfg)
    assert "refusal.harmful: dataset 'harmful' (2 rows after cleaning) has no row in split" in text, text[-2000:]
    cfg["datasets"]["harmful"]["path"] = "many.csv"
    assert snakemake(sized, "--dry-run", config=cfg).returncode == 0


# --- found by the first job that can know, before any expensive work -----------------------

def test_a_prompt_longer_than_the_models_context_fails_before_the_cache_is_written(tiny_model_dir, tmp_path):
    """The tiny GPT-2 has 128 learned positions: a longer statement fails the extraction
    naming model, count and prompt, and leaves no cache (nor a partial one)."""
    from ptmech import adapter as ad, cache

    model = ad.load_model("tiny-gpt2", {"path": str(tiny_model_dir("gpt2")), "dtype": "float32", "device": "cpu"})
    assert model.context_length == 128
    long = " ".join(["paris"] * 200)
    out = tmp_path / "c.h5"
    with pytest.raises(ad.ContextError, match=r"model 'tiny-gpt2': 1 of 2 prompts are longer than its context of "
                                              r"128 positions, the longest 201 tokens \(prompt 1, 'paris paris"):
        cache.extract(model, ["the city of paris is in france .", long], out, positions=[-1], log=lambda m: None)
    assert list(tmp_path.iterdir()) == []
    assert len(model.encode([" ".join(["paris"] * 127)])[0]) == 128  # exactly the context is fine


@pytest.mark.parametrize("setting", ["steering", "knowledge"])
def test_too_few_demonstrations_in_a_generated_dataset_name_dataset_and_setting(setting):
    """Datasets a rule makes are sized by the job that reads them, which names both."""
    from ptmech.knowledge import pairs as statement_pairs
    from ptmech.truth import steering as truth_steering

    table = pd.DataFrame({"statement": ["The city of A is in X.", "The city of B is in X.", "The city of C is in Y."],
                          "label": [1, 0, 0]})  # one pair (same last word) and no other true statement
    if setting == "steering":
        with pytest.raises(ValueError, match=r"dataset 'cities' \(truth.steering.n_demos\): only 1 demonstrations "
                                             r"with label 1 available, need 2"):
            truth_steering.choose_demos(table, 4, what="dataset 'cities' (truth.steering.n_demos)")
    else:
        from conftest import make_tokenizer

        with pytest.raises(ValueError, match=r"dataset 'cities' \(knowledge.n_true_demos, knowledge.n_false_demos\): "
                                             r"only 0 demonstrations with label 1"):
            statement_pairs.build_pairs(make_tokenizer(), table["statement"], table["label"], "cities",
                                        ["The city of {subject} is in {object}."], n_true_demos=1, n_false_demos=1)


def test_a_made_dataset_is_sized_before_extraction_and_a_changed_need_re_extracts_nothing(tmp_path):
    """A dataset the parse cannot read (here a file under results/, as a rule would make)
    is sized by rule dataset_sized before its extraction. Asking more of it reruns that
    check and nothing upstream; asking too much fails it, naming the setting, before the
    model is run on it."""
    from workflow import FAMILY, planned_jobs, tiny_family_workflow

    wd = tiny_family_workflow(tmp_path / "wf", {"st.csv": _statements(3, 3)})
    (wd / "results").mkdir()
    (wd / "results" / "made.csv").write_text(_statements(3, 3))
    cfg = {"models": copy.deepcopy(FAMILY),
           "datasets": {"st": {"path": "st.csv", "kind": "statements"},
                        "made": {"path": "results/made.csv", "kind": "statements"}},
           "prompt_sets": {"statements": {"kind": "statements", "positions": "last", "datasets": ["st", "made"]}},
           "truth": {"steering": {"datasets": ["made"], "n_demos": 2}},
           "refusal": {"enabled": False}, "knowledge": {"enabled": False}}
    target = "results/activations/a/statements/made.h5"
    snakemake(wd, target, config=cfg)
    assert "truth.steering.n_demos: ok" in (wd / "results" / "data" / "made.sized").read_text()
    cfg["truth"]["steering"]["n_demos"] = 4
    assert planned_jobs(wd, target, config=cfg) == [("dataset_sized", "results/data/made.sized")]
    cfg["truth"]["steering"]["n_demos"] = 6  # 3 true + 3 false and one left to steer: 7 rows
    proc = snakemake(wd, "results/activations/b/statements/made.h5", config=cfg, check=False)
    assert proc.returncode != 0
    assert ("truth.steering.n_demos: dataset 'made' (6 rows after cleaning) is too small: 6 demonstrations "
            "and a statement left to steer needs 7 rows") in proc.stdout + proc.stderr
    assert not (wd / "results" / "activations" / "b").exists()
    assert not (wd / "results" / "data" / "made.sized").exists()


def test_a_skeleton_no_statement_matches_fails_the_dry_run(sized):
    cfg = _sized(knowledge={"datasets": ["st"], "skeletons": {"st": ["The city of {subject} is in {object}."]}})
    text = dry_run_error(sized, cfg)
    assert ("knowledge.skeletons.st: dataset 'st': no statement matches its skeleton(s) "
            "['The city of {subject} is in {object}.']; first statement: 't0 is x .'") in text, text[-2000:]


def test_a_post_trained_model_without_chat_template_or_template_fails_the_dry_run(sized):
    """Instructions are rendered with a post-trained model's chat template; a folder whose
    tokenizer has none needs models.<m>.template, and the dry run says so."""
    folder = stub_model_folder(sized / "models" / "plain")
    (folder / "tokenizer_config.json").write_text("{}")
    cfg = _instructions_config(sized, {"m1": {"path": "models/plain", "family": "f", "role": "instruct"}})
    text = dry_run_error(sized, cfg)
    assert "models.m1.template: model 'm1' (role 'instruct') has no chat template in models/plain" in text, text[-2000:]
    cfg["models"]["m1"]["template"] = "Q: {instruction}\nA:"
    assert snakemake(sized, "--dry-run", config=cfg).returncode == 0
    (folder / "chat_template.jinja").write_text("{{ messages[0]['content'] }}")
    del cfg["models"]["m1"]["template"]
    assert snakemake(sized, "--dry-run", config=cfg).returncode == 0


def test_a_hub_dataset_in_the_datasets_cache_is_loadable_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path))
    assert ptcfg.hub_dataset_problem("datasets.x.hub", "org/name") is not None
    (tmp_path / "org___name").mkdir()
    assert ptcfg.hub_dataset_problem("datasets.x.hub", "org/name") is None
    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert ptcfg.hub_dataset_problem("datasets.x.hub", "other/name") is None  # online: the job downloads it


def test_a_jobs_own_parse_knows_the_local_datasets_without_reading_them(wd, monkeypatch):
    """On a cluster every job parses the workflow again; the main parse read the files, so a
    job's parse only names them (a size check there has nothing to do)."""
    monkeypatch.chdir(wd)
    cfg = copy.deepcopy(BASE)
    del cfg["models"]["m2"]
    tables = ptcfg.check(cfg, read_data=True)
    assert list(tables) == ["st"] and tables["st"]["statement"].tolist() == ["a b ."]
    (wd / "st.csv").write_text("statement,label\na,maybe\n")  # would fail a full read
    try:
        assert ptcfg.check(cfg, read_data=False) == {"st": None}
        ptcfg.require_rows({"st": None}, "st", "truth.steering.n_demos", true=5)  # nothing to check: no error
    finally:
        (wd / "st.csv").write_text("statement,label\na b .,1\n")
