"""The organism seed benchmark's tools for telling base from post-training: other
post-training runs of one kept base (``post_seed``) and the refusal-direction candidates at
every depth (``--candidates``), on a tiny trio."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import refusal_defaults
from ptmech.organism import recipe
from ptmech.organism.world import World
from test_organism_train import SHORT, SHORT_PRETRAIN, SMALL_MODEL, SMALL_WORLD

REPO = Path(__file__).resolve().parents[1]
TINY = {"seed": 3, "threads": 1, "world": SMALL_WORLD, "model": SMALL_MODEL, "pretrain": SHORT_PRETRAIN,
        "sft": SHORT, "instruct": {**SHORT, "dpo_batch_size": 4}}


def _benchmark():
    spec = importlib.util.spec_from_file_location("organism_seeds", REPO / "benchmarks" / "organism_seeds.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def trio(tmp_path_factory):
    root = tmp_path_factory.mktemp("trio")
    recipe.build_trio(root, TINY)
    return root


def _base_copy(trio: Path, dest: Path) -> Path:
    for name in ("world.json", "tokenizer", "organism-base"):
        (shutil.copytree if (trio / name).is_dir() else shutil.copy)(trio / name, dest / name)
    return dest


def test_post_training_again_with_the_same_seed_gives_the_same_models(trio, tmp_path):
    again = _base_copy(trio, tmp_path)
    recipe.build_trio(again, TINY, stages=("sft", "instruct"))
    for name in ("organism-sft", "organism-instruct"):
        assert _same(_weights(trio / name), _weights(again / name)), name


def test_a_post_seed_changes_post_training_only(trio, tmp_path):
    other = _base_copy(trio, tmp_path)
    recipe.build_trio(other, TINY, stages=("sft", "instruct"), post_seed=TINY["seed"] + 1000)
    assert _same(_weights(trio / "organism-base"), _weights(other / "organism-base"))
    for name in ("organism-sft", "organism-instruct"):
        assert not _same(_weights(trio / name), _weights(other / name)), name


def test_candidates_cover_every_block_input_beyond_the_depth_filter(trio, tmp_path):
    work = _base_copy(trio, tmp_path)
    shutil.copytree(trio / "organism-instruct", work / "organism-instruct")
    rows = _benchmark().candidate_rows(work, World.from_json(work / "world.json"), refusal_defaults())
    ks = {int(r["k"]) for r in rows}
    n_layers = SMALL_MODEL["num_hidden_layers"]
    # the depth filter alone would keep k < int(0.8 L) = 1 of the 2 block inputs
    assert ks == set(range(n_layers))
    assert len(rows) == n_layers * len({r["position"] for r in rows})
    for r in rows:
        assert 0 <= r["ablation_refusal_rate"] <= 1 and 0 <= r["addition_refusal_rate"] <= 1
