"""Floors on the trained model organism: its base model represents truth linearly (a
held-out MMProbe separates true from false statements), post-training keeps that direction,
and the paper's intervention with a large multiple of it flips the few-shot answer."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from ptmech.adapter import load_model
from ptmech.truth import probes as truth
from ptmech.truth import steering as st

from conftest import heldout_probe_sweep

pytestmark = pytest.mark.organism  # needs the default run's trained organism (see pyproject)

DATASETS = ["cities", "neg_cities", "larger_than", "smaller_than", "trans", "neg_trans"]


@pytest.fixture(scope="module")
def organism_probes(organism_dir, tmp_path_factory):
    """Statement caches, leave-one-out mm probes and the chosen layers of base and sft."""
    root = tmp_path_factory.mktemp("truth_organism")
    tables = {ds: pd.read_csv(Path(organism_dir) / "data" / f"{ds}.csv") for ds in DATASETS}
    out = {}
    for model in ("organism-base", "organism-sft"):
        adapter = load_model(model, {"path": str(Path(organism_dir) / model), "dtype": "float32", "device": "cpu"})
        acc, probes, _ = heldout_probe_sweep(adapter, tables, root / model)
        out[model] = (acc, probes)
    layers = truth.choose_layers(out["organism-base"][0], out["organism-base"][1].n_layers)
    return out, layers, tables


def test_base_model_best_layer_heldout_probe_accuracy(organism_probes):
    (acc, _), layers = organism_probes[0]["organism-base"], organism_probes[1]
    # measured 0.97 on the default trio (leave-one-dataset-out mm, k = 5; 0.42 at k <= 3); the floor leaves
    # room for retraining noise
    assert layers["probe_accuracy"] >= 0.8, layers["scores"]
    assert acc.query("k == @layers['probe_k'] and heldout == 'cities'")["accuracy"].item() >= 0.8


def test_post_training_keeps_the_truth_direction(organism_probes):
    out, layers, _ = organism_probes
    k = layers["probe_k"]
    pa, pb = out["organism-base"][1], out["organism-sft"][1]
    cos = truth.cosine(pa.probe("mm", "cities", k).direction, pb.probe("mm", "cities", k).direction)
    assert cos > 0.5


@pytest.mark.xfail(strict=True, reason=(
    "known gap: the organism's truth direction appears only at k = 4-5 (the last blocks' outputs), "
    "after most of the blocks that the few-shot answer reads; steering k = 3-5 with it moves true->false "
    "(score 0.68) but not false->true (0.01), measured on the default trio at c928011"))
def test_a_large_multiple_of_the_truth_direction_flips_the_answer(organism_probes, organism_dir):
    out, layers, tables = organism_probes
    adapter = load_model("organism-base", {"path": str(Path(organism_dir) / "organism-base"), "dtype": "float32",
                                           "device": "cpu"})
    table = tables["cities"]
    demos = st.choose_demos(table, 4, seed=1)
    rows = st.select_statements(table, demos, limit=60)
    ids, suffix = st.encode_queries(adapter, st.few_shot_queries(rows["statement"], rows.index, demos))
    labels = rows["label"].to_numpy()
    signs = st.signs_for(labels)
    v = out["organism-base"][1].steering_vector("mm", "cities", layers["probe_k"])
    base = st.p_true_false(adapter, ids, suffix, signs)
    steered = st.p_true_false(adapter, ids, suffix, signs, vector=v, ks=layers["steer_k"],
                              offsets=[0, -1], coefficient=8.0)
    scores = st.steering_scores(labels, base[:, 0] - base[:, 1], steered[:, 0] - steered[:, 1]).set_index("subset")
    assert scores.loc["true_to_false", "score"] > 0.5 and scores.loc["false_to_true", "score"] > 0.5
