"""Floors on the trained model organism: activation patching finds where its models recall a
city's country. With completion queries ("The city of X is in"), patching the true run's
subject token in the first block, or its last token in the last blocks, moves the false run's
answer to the true one; patching any other position changes nothing; and the base model's
true runs do the same in the post-trained models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from ptmech.adapter import load_model
from ptmech.knowledge import patching
from ptmech.knowledge.pairs import build_pairs, skeletons_for

pytestmark = pytest.mark.organism  # needs the default run's trained organism (see pyproject)

N_PAIRS = 24


@pytest.fixture(scope="module")
def cities(organism_dir):
    torch.set_num_threads(1)
    table = pd.read_csv(Path(organism_dir) / "data" / "cities.csv")
    models = {m: load_model(m, {"path": str(Path(organism_dir) / m), "dtype": "float32", "device": "cpu"})
              for m in ("organism-base", "organism-sft")}
    doc = build_pairs(models["organism-base"].tokenizer, table["statement"].tolist(), table["label"].tolist(),
                      "cities", skeletons_for("cities"), query_mode="completion", max_pairs=N_PAIRS)
    return models, doc


def _grid(target, source, doc):
    pairs, T = doc["pairs"], len(doc["columns"])
    acts = {}
    for idx, a, _ in patching.true_runs(source, [p["true_ids"] for p in pairs], T):
        acts.update({int(i): a[b] for b, i in enumerate(idx)})
    true_top = patching.top_tokens(source, [p["true_ids"] for p in pairs])
    false_top = patching.top_tokens(target, [p["false_ids"] for p in pairs])
    answers = patching.completion_answers(true_top, false_top)
    ld = patching.patch_pairs(target, pairs, acts.__getitem__, answers, log=lambda s: None)
    clean = patching.clean_logit_diffs(target, [p["false_ids"] for p in pairs], answers)
    return ld, clean, true_top


def test_base_model_recalls_the_countries(cities):
    models, doc = cities
    base = models["organism-base"]
    top = patching.top_tokens(base, [p["true_ids"] for p in doc["pairs"]])
    answers = base.tokenizer.convert_ids_to_tokens(top.tolist())
    objects = [p["true"].rstrip(".").split()[-1] for p in doc["pairs"]]
    assert np.mean([a == o for a, o in zip(answers, objects)]) >= 0.9


@pytest.mark.parametrize("source,target", [("organism-base", "organism-base"), ("organism-base", "organism-sft")])
def test_patching_finds_the_subject_then_the_last_token(cities, source, target):
    models, doc = cities
    ld, clean, _ = _grid(models[target], models[source], doc)
    mean, base = ld.mean(0), clean.mean()  # [T, L]
    gap = mean[-1, -1] - base
    assert gap > 2.0  # the last block at the last token carries the true answer
    groups = [c["group"] for c in doc["columns"]]
    subject, other = groups.index("subject"), [j for j, g in enumerate(groups) if g == "other"]
    assert mean[subject, 0] - base > 0.5 * gap  # the subject, early
    assert np.abs(mean[other] - base).max() < 0.05 * gap  # nothing elsewhere
