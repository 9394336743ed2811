"""The truth and refusal stages' aggregate tables (ptmech.truth.tables,
ptmech.refusal.tables) on small frames whose right answers follow from their definitions:
the transfer direction of each probe / activation pairing, the probe-layer flag, the cosine
of a direction with itself and with its negation, and the premises of each score row."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ptmech import premises
from ptmech.refusal import directions as rf
from ptmech.refusal import tables as refusal_tables
from ptmech.truth import tables as truth_tables

MODELS = {"base": {"family": "f", "role": "base"}, "chat": {"family": "f", "role": "instruct"},
          "solo": {"family": "g", "role": "base"}}
PAIR_INFO = [{"source": "base", "target": "chat", "direction": "forward"},
             {"source": "chat", "target": "base", "direction": "backward"}]


def layers_docs():
    return [{"family": "f", "model": "base", "probe_k": 2, "steer_k": [1, 2], "scores": [0.5], "layer_convention": "k"},
            {"family": "g", "model": "solo", "probe_k": 1, "steer_k": [1], "scores": [0.5], "layer_convention": "k"}]


def test_truth_transfer_rows_are_native_forward_or_backward_and_flag_the_probe_layer():
    rows = []
    for probe_model in ("base", "chat"):
        for eval_model in ("base", "chat"):
            for k in (1, 2, 3):
                rows.append({"source": "base", "target": "chat", "probe": "mm", "heldout": "cities", "k": k,
                             "probe_model": probe_model, "eval_model": eval_model,
                             "accuracy": 0.9, "n": 10})
    layers = truth_tables.layers_table(layers_docs())
    assert list(layers["steer_k"]) == ["1,2", "1"] and "scores" not in layers
    table = truth_tables.transfer_table([pd.DataFrame(rows)], MODELS, layers, PAIR_INFO)
    expected = {("base", "base"): "native", ("chat", "chat"): "native", ("base", "chat"): "forward",
                ("chat", "base"): "backward"}
    assert [expected[(a, b)] for a, b in zip(table["probe_model"], table["eval_model"])] == list(table["direction"])
    assert list(table.columns).index("direction") == list(table.columns).index("eval_model") + 1
    assert (table["at_probe_layer"] == (table["k"] == 2)).all()
    assert (table["family"] == "f").all()


def test_truth_tables_of_families_of_one_are_empty_with_their_columns():
    layers = truth_tables.layers_table(layers_docs())
    transfer = truth_tables.transfer_table([], MODELS, layers, [])
    cosine = truth_tables.cosine_table([], MODELS, layers)
    assert transfer.empty and {"direction", "family", "at_probe_layer", "probe_model"} <= set(transfer.columns)
    assert cosine.empty and {"cosine", "family"} <= set(cosine.columns)
    accuracy = truth_tables.accuracy_table(
        [pd.DataFrame({"model": ["solo"] * 2, "probe": "mm", "heldout": "cities", "k": [1, 2],
                       "accuracy": [0.7, 0.8], "n": 10})], MODELS, layers)
    assert list(accuracy.columns[:3]) == ["model", "family", "role"] and list(accuracy["at_probe_layer"]) == [True, False]


def score_frame(target, source, operation, instructions, rate, coefficient=np.nan):
    return pd.DataFrame({"target": [target], "source": [source], "operation": [operation],
                         "instructions": [instructions], "refusal_score": [rate], "coefficient": [coefficient]})


def test_refusal_scores_label_each_row_and_flag_unmet_premises():
    rng = np.random.default_rng(0)
    r = rng.normal(size=8)
    directions = {"base": r, "chat": -r}
    metas = {"base": {"rule": "fallback: no candidate passed"}, "chat": {"rule": "filters"}}
    frames = [score_frame("base", None, "none", "harmful", 0.02), score_frame("chat", None, "none", "harmful", 0.95),
              score_frame("chat", "chat", "ablation", "harmful", 0.1), score_frame("chat", "base", "ablation", "harmful", 0.8),
              score_frame("base", "chat", "ablation", "harmful", 0.0), score_frame("base", "chat", "addition", "harmless", 0.6, 1.0)]
    table = refusal_tables.scores_table(frames, MODELS, PAIR_INFO, directions, metas, min_baseline=0.5)
    row = {(t, s, op): x for t, s, op, x in zip(table["target"], table["source"], table["operation"], table.to_dict("records"))}
    assert row[("base", "", "none")]["direction"] == "baseline" and np.isnan(row[("base", "", "none")]["cosine_to_native"])
    assert row[("chat", "chat", "ablation")]["direction"] == "native"
    assert row[("chat", "chat", "ablation")]["cosine_to_native"] == pytest.approx(1.0)
    assert row[("chat", "base", "ablation")]["direction"] == "forward"
    assert row[("chat", "base", "ablation")]["cosine_to_native"] == pytest.approx(-1.0)
    assert row[("base", "chat", "addition")]["direction"] == "backward"
    # premises: base's direction is a fallback; base refuses 0.02 < 0.5, so ablating on it shows nothing
    assert row[("chat", "chat", "ablation")][premises.COLUMN] == ""
    assert "fallback" in row[("chat", "base", "ablation")][premises.COLUMN]
    assert "too low to ablate" in row[("base", "chat", "ablation")][premises.COLUMN]
    assert "too low to ablate" not in row[("base", "chat", "addition")][premises.COLUMN]
    assert list(table.columns[-1:]) == [premises.COLUMN]
    assert list(table["target"]) == sorted(table["target"])  # sorted by family, then target


def test_refusal_cosines_read_each_model_at_its_own_position_and_keep_the_plans_pair_order():
    rng = np.random.default_rng(1)
    diff = rng.normal(size=(3, 2, 6)).astype(np.float32)  # [K, P, d]
    base = rf.Candidates(diff, [0, 1, 2], [-2, -1])
    other = diff.copy()
    other[:, 1] = -diff[:, 0]  # chat's position -1 holds minus base's position -2
    chat = rf.Candidates(other, [0, 1, 2], [-2, -1])
    metas = {"base": {"position": -2, "k": 1}, "chat": {"position": -1, "k": 2}}
    directions = {"base": base.direction(1, -2), "chat": chat.direction(2, -1)}
    table = refusal_tables.cosine_table([("base", "chat")], MODELS, {"base": base, "chat": chat}, directions, metas)
    assert list(table["k"]) == [0, 1, 2] and np.allclose(table["cosine"], -1.0, atol=1e-6)
    assert set(table["model_a"]) == {"base"} and set(table["k_selected_b"]) == {2}
    expected = rf.cosine(diff[1, 0], -diff[2, 0])
    assert np.allclose(table["cosine_selected"], expected)
    assert refusal_tables.cosine_table([], MODELS, {}, {}, {}).columns.tolist() == refusal_tables.COSINE_COLUMNS


def test_refusal_selection_names_the_model_and_the_fallback_premise():
    frames = {m: pd.DataFrame({"k": [0, 1], "position": [-1, -1], "discarded": [np.nan, "kl"]}) for m in ("base", "chat")}
    metas = {"base": {"how": "automatic", "rule": "fallback: none passed"}, "chat": {"how": "automatic", "rule": "filters"}}
    table = refusal_tables.selection_table(frames, metas)
    assert list(table.columns[:2]) == ["model", "how"] and list(table["discarded"]) == ["", "kl", "", "kl"]
    assert (table[table["model"] == "base"][premises.COLUMN] != "").all()
    assert (table[table["model"] == "chat"][premises.COLUMN] == "").all()
