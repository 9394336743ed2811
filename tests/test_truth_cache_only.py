"""The cache-only truth steps (probes, layer choice, transfer, PCA, tables, figures) load no
model: their rule scripts run here, with a fake ``snakemake`` object, while every way of
loading a model or tokenizer raises."""

from __future__ import annotations

import itertools
import json
import logging
import runpy
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import transformers

from conftest import REPO, save_tiny_model
from ptmech import adapter as adapter_mod
from ptmech import logs
from ptmech.cache import extract

SCRIPTS = REPO / "workflow_scripts"
NUMBERS = "one two three four five six".split()
PLACES = [("paris", "france"), ("rome", "italy"), ("berlin", "germany")]


def datasets() -> dict[str, pd.DataFrame]:
    cities = [(f"the city of {c} {n} is in {y2} .", int(y == y2))
              for c, y in PLACES for _, y2 in PLACES for n in NUMBERS[:2]]
    larger = [(f"{a} is larger than {b} .", int(i > j))
              for (i, a), (j, b) in itertools.permutations(enumerate(NUMBERS), 2)]
    smaller = [(f"{a} is smaller than {b} .", int(i < j))
               for (i, a), (j, b) in itertools.permutations(enumerate(NUMBERS), 2)]
    return {name: pd.DataFrame(rows, columns=["statement", "label"])
            for name, rows in (("cities", cities), ("larger_than", larger), ("smaller_than", smaller))}


@pytest.fixture(scope="module")
def caches(tmp_path_factory):
    """Statement caches of two tiny models ('base', 'post') for three datasets."""
    root = tmp_path_factory.mktemp("truth_cache_only")
    paths = {}
    for model, seed in (("base", 0), ("post", 1)):
        folder = save_tiny_model("llama", root / "models" / model, seed=seed)
        ad = adapter_mod.load_model(model, {"path": str(folder), "dtype": "float32", "device": "cpu"})
        for ds, table in datasets().items():
            path = root / "activations" / model / f"{ds}.h5"
            extract(ad, list(table["statement"]), path, positions=[-1], labels={"label": table["label"].to_numpy()},
                    attrs={"dataset": ds, "prompt_set": "statements"}, log=lambda s: None)
            paths[model, ds] = str(path)
    return root, paths


@pytest.fixture
def no_model_loading(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a cache-only step tried to load a model or tokenizer")

    monkeypatch.setattr(adapter_mod, "load_model", refuse)
    for cls in (transformers.AutoModelForCausalLM, transformers.AutoModel, transformers.AutoTokenizer,
                transformers.AutoConfig, transformers.PreTrainedModel):
        monkeypatch.setattr(cls, "from_pretrained", refuse)
    monkeypatch.setattr(logs, "to_file", lambda path: logging.getLogger("ptmech.test"))


MODELS = {"base": {"family": "f", "role": "base"}, "post": {"family": "f", "role": "instruct"}}


def run_script(name: str, **parts) -> None:
    snakemake = SimpleNamespace(**{k: SimpleNamespace(**v) if isinstance(v, dict) else v for k, v in parts.items()})
    snakemake.log = ["unused.log"]
    runpy.run_path(str(SCRIPTS / name), init_globals={"snakemake": snakemake}, run_name="__main__")


def test_cache_only_steps_load_no_model(caches, no_model_loading, tmp_path):
    root, paths = caches
    names = list(datasets())
    out = tmp_path
    settings = {"datasets": names, "train_datasets": names, "cache_datasets": names, "probes": ["mm", "lr"],
                "lr_probe": {"C": 1.0, "max_iter": 200}, "mm_probe": {"fit": "optimal"}}
    for model in ("base", "post"):
        run_script("truth/probes.py", input={"caches": [paths[model, ds] for ds in names]},
                   output={"table": f"{out}/{model}/probes.tsv", "probes": f"{out}/{model}/probes.npz"},
                   params={"settings": settings}, wildcards={"model": model})
    acc = pd.read_csv(out / "base" / "probes.tsv", sep="\t")
    assert set(acc["k"]) == {0, 1, 2, 3} and set(acc["heldout"]) == set(names)
    assert "layer" not in acc  # one layer convention: k only

    run_script("truth/layers.py", input={"table": f"{out}/base/probes.tsv", "probes": f"{out}/base/probes.npz"},
               output={"json": f"{out}/layers.json"},
               params={"settings": {"family": "f", "model": "base", "probe": "mm", "probe_k": None,
                                    "intervene_k": None, "intervene_fraction": 0.25}})
    layers = json.loads((out / "layers.json").read_text())
    assert layers["probe_source"] == "best_heldout" and 1 <= layers["probe_k"] <= 3
    assert layers["scores"][str(layers["probe_k"])] == max(layers["scores"].values())

    run_script("truth/transfer.py",
               input={"source_probes": f"{out}/base/probes.npz", "target_probes": f"{out}/post/probes.npz",
                      "source_caches": [paths["base", ds] for ds in names],
                      "target_caches": [paths["post", ds] for ds in names]},
               output={"transfer": f"{out}/pair/transfer.tsv", "cosine": f"{out}/pair/cosine.tsv"},
               params={"settings": {"datasets": names}}, wildcards={"source": "base", "target": "post"})
    transfer = pd.read_csv(out / "pair" / "transfer.tsv", sep="\t")
    assert len(transfer) == 4 * len(acc)  # the 2x2 matrix at every (probe, held-out set, k)
    # the native cells are the models' own sweeps
    for model in ("base", "post"):
        own = pd.read_csv(out / model / "probes.tsv", sep="\t")
        native = transfer[(transfer["probe_model"] == model) & (transfer["eval_model"] == model)]
        merged = native.merge(own, on=["probe", "heldout", "k"], suffixes=("", "_own"))
        assert len(merged) == len(own)
        np.testing.assert_allclose(merged["accuracy"], merged["accuracy_own"])

    run_script("truth/pca.py",
               input={"source_cache": paths["base", "cities"], "target_cache": paths["post", "cities"],
                      "source_probes": f"{out}/base/probes.npz", "target_probes": f"{out}/post/probes.npz",
                      "layers": f"{out}/layers.json"},
               output={"table": f"{out}/pca.tsv", "figure": f"{out}/pca.png"},
               params={"settings": {"dataset": "cities", "probe": "mm"}, "models": MODELS},
               wildcards={"source": "base", "target": "post"})
    pca = pd.read_csv(out / "pca.tsv", sep="\t")
    assert (pca["kind"] == "direction").sum() == 2 and (out / "pca.png").stat().st_size > 0

    tables = {t: f"{out}/tables/truth_{t}.tsv" for t in ("accuracy", "layers", "transfer", "cosine")}
    models = MODELS
    pairs = [{"source": "base", "target": "post", "direction": "forward"},
             {"source": "post", "target": "base", "direction": "backward"}]
    run_script("truth/tables.py",
               input={"probes": [f"{out}/base/probes.tsv", f"{out}/post/probes.tsv"],
                      "layers": [f"{out}/layers.json"], "transfer": [f"{out}/pair/transfer.tsv"],
                      "cosine": [f"{out}/pair/cosine.tsv"]},
               output=tables, params={"models": models, "pairs": pairs})
    table = pd.read_csv(tables["transfer"], sep="\t")
    cells = table.drop_duplicates(["probe_model", "eval_model", "direction"])[["probe_model", "eval_model", "direction"]]
    assert sorted(map(tuple, cells.to_numpy())) == [("base", "base", "native"), ("base", "post", "forward"),
                                                    ("post", "base", "backward"), ("post", "post", "native")]
    cos = pd.read_csv(tables["cosine"], sep="\t")
    assert cos["at_probe_layer"].sum() == 2 * len(names)  # 2 probe kinds x held-out sets
    for kind, inputs, wc in (("accuracy", {"accuracy": tables["accuracy"], "layers": tables["layers"]}, {"family": "f"}),
                             ("cosine", {"cosine": tables["cosine"], "layers": tables["layers"]}, {"family": "f"}),
                             ("transfer", {"transfer": tables["transfer"], "layers": tables["layers"]},
                              {"source": "base", "target": "post"})):
        run_script("truth/figures.py", input=inputs, output={"figure": f"{out}/{kind}.png"},
                   params={"kind": kind, "models": MODELS}, wildcards=wc)
        assert (out / f"{kind}.png").stat().st_size > 0


def test_the_guard_catches_a_model_load(no_model_loading, tiny_model_dir):
    """So the test above can fail: loading a model under the guard raises."""
    with pytest.raises(AssertionError, match="tried to load"):
        adapter_mod.load_model("x", {"path": str(tiny_model_dir("llama"))})
    with pytest.raises(AssertionError, match="tried to load"):
        transformers.AutoModelForCausalLM.from_pretrained(str(tiny_model_dir("llama")))
