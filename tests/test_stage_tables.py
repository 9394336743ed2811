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


# --- knowledge -------------------------------------------------------------------------


def patching_result(source, target, true_ld, false_ld, source_true=None, source_false=None, T=3, L=2, family="f"):
    rng = np.random.default_rng(len(source) + len(target))
    P = len(true_ld)
    return {"ld": rng.normal(size=(P, T, L)).astype(np.float32),
            "target_true_ld": np.asarray(true_ld, float), "target_false_ld": np.asarray(false_ld, float),
            "source_true_ld": np.asarray(true_ld if source_true is None else source_true, float),
            "source_false_ld": np.asarray(false_ld if source_false is None else source_false, float),
            "attrs": {"family": family, "dataset": "cities", "source": source, "target": target,
                      "direction": "single" if source == target else "forward", "query": "question", "n_pairs": P,
                      "columns": [{"role": f"t{j}", "group": "other"} for j in range(T)]}}


def test_knowledge_premise_names_the_model_whose_clean_gap_is_noise():
    from ptmech.knowledge import tables as knowledge_tables

    clear_t, clear_f = [3.0, 3.2, 2.9, 3.1], [-3.0, -2.8, -3.1, -2.9]  # gap 6 +- 0.2: t far above 3
    noisy_t, noisy_f = [0.5, -0.4, 0.1, -0.2], [0.0, 0.1, -0.1, 0.2]
    own = patching_result("b", "b", clear_t, clear_f)
    t, premise = knowledge_tables.run_premise(own, min_t=3.0)
    assert t["target"] > 3 and premise == ""
    t, premise = knowledge_tables.run_premise(patching_result("b", "b", noisy_t, noisy_f), min_t=3.0)
    assert premise.startswith("target: clean logit gap within noise")
    # cross-model: a clear target and a noisy source name the source only
    cross = patching_result("p", "b", clear_t, clear_f, source_true=noisy_t, source_false=noisy_f)
    _, premise = knowledge_tables.run_premise(cross, min_t=3.0)
    assert premise.startswith("source:") and "target" not in premise
    # a model on itself: its source is itself, so it is named once, as the target
    _, premise = knowledge_tables.run_premise(patching_result("b", "b", noisy_t, noisy_f), min_t=3.0)
    assert "source" not in premise


def test_knowledge_tables_key_every_cell_and_count_right_answers():
    from ptmech.knowledge import tables as knowledge_tables

    runs = [patching_result("b", "b", [1.0, 2.0, -1.0, 3.0], [-1.0, 1.0, -2.0, -3.0]),
            patching_result("s", "s", [1.0, 1.0, 1.0, 1.0], [-1.0, -1.0, -1.0, -1.0], family="g")]
    models = {"b": {"family": "f", "role": "base"}, "s": {"family": "g", "role": "base"}}
    out = knowledge_tables.patching_tables(runs, models, bins=4, min_t=3.0)
    heat, base = out["heatmaps"], out["baselines"]
    assert list(heat.columns[:len(knowledge_tables.KEY_COLUMNS)]) == knowledge_tables.KEY_COLUMNS
    assert len(heat) == 2 * 3 * 2 and set(heat["k"]) == {1, 2}
    # b: true answered right on 3 of 4 (LD > 0), false on 3 of 4 (LD < 0): accuracy 6 / 8
    assert base.set_index("target").loc["b", "target_accuracy"] == pytest.approx(0.75)
    assert base.set_index("target").loc["s", "target_accuracy"] == 1.0
    assert base.set_index("target").loc["b", "patched_last_cell_ld"] == pytest.approx(runs[0]["ld"][:, -1, -1].mean())
    assert knowledge_tables.lone_families(heat) == ["f", "g"] and out["differences"].empty


# --- confidence ------------------------------------------------------------------------


def test_confidence_tables_flag_entropy_neurons_that_do_not_stand_out_and_label_pairs():
    from ptmech.confidence import tables as confidence_tables

    rng = np.random.default_rng(0)
    n = 200
    norm = rng.random(n) + 1.0
    var = np.exp(rng.normal(size=n))
    outlying = var.copy()
    top = np.argsort(-norm)[:50]
    outlying[top[:5]] = 1e-6  # five large-norm neurons with a far lower LogitVar: entropy neurons
    stats = {"a": pd.DataFrame({"neuron": np.arange(n), "norm": norm, "logit_var": outlying}),
             "b": pd.DataFrame({"neuron": np.arange(n), "norm": norm, "logit_var": var})}
    models = {"a": {"family": "f", "role": "base"}, "b": {"family": "g", "role": "instruct"}}
    selection = {"top_norm_fraction": 0.25, "n_neurons": 5, "grid": {"top_norm_fraction": [0.25], "n_neurons": [5]}}
    sel = confidence_tables.selection_table(stats, models, selection, max_z=-3.0)
    by_model = sel.groupby("model")
    assert set(by_model.get_group("a")["neuron"]) == set(top[:5])
    assert (by_model.get_group("a")[premises.COLUMN] == "").all()
    assert by_model.get_group("b")[premises.COLUMN].str.startswith("entropy neurons are not outliers").all()
    assert list(sel.columns[:3]) == ["model", "family", "role"]
    iou = confidence_tables.iou_table(sel, [("a", "b")], models)
    assert list(iou["family"]) == ["f/g"] and 0 <= iou["iou"].iloc[0] < 1
    assert len(confidence_tables.at(sel, selection)) == 10
