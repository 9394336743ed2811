"""The truth stage's tidy tables over all models and pairs: probe accuracy per model,
the families' layers, probe transfer and direction cosines per pair, and the steering score
of one steering run (``steering_scores``). Pure numpy / pandas on what the jobs wrote, no
torch; the rule scripts only read and write files."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

ACCURACY_COLUMNS = ["model", "probe", "heldout", "k", "accuracy", "n"]
PAIR_COLUMNS = ["source", "target", "probe", "heldout", "k"]
TRANSFER_COLUMNS = PAIR_COLUMNS + ["probe_model", "eval_model", "accuracy", "n"]
COSINE_COLUMNS = PAIR_COLUMNS + ["cosine"]


def concat(frames: list[pd.DataFrame], columns: list[str]) -> pd.DataFrame:
    """The frames as one; an empty table with ``columns`` when there are none (a family of
    one model has no pairs)."""
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


def layers_table(docs: list[dict]) -> pd.DataFrame:
    """One row per family from its layers.json (without the sweep scores)."""
    layers = pd.DataFrame(docs).drop(columns=["scores", "layer_convention"])
    layers["steer_k"] = layers["steer_k"].map(lambda ks: ",".join(map(str, ks)))
    return layers


def _annotate(table: pd.DataFrame, model_col: str, models: dict, probe_k: dict) -> pd.DataFrame:
    """The family after ``model_col``, and whether the row is at the family's probe layer."""
    family = table[model_col].map(lambda m: models[m]["family"])
    table.insert(table.columns.get_loc(model_col) + 1, "family", family)
    table["at_probe_layer"] = table["k"] == family.map(probe_k)
    return table


def probe_layers(layers: pd.DataFrame) -> dict:
    """family -> its probe layer k."""
    return dict(zip(layers["family"], layers["probe_k"]))


def accuracy_table(frames: list[pd.DataFrame], models: dict, layers: pd.DataFrame) -> pd.DataFrame:
    table = _annotate(concat(frames, ACCURACY_COLUMNS), "model", models, probe_layers(layers))
    table.insert(2, "role", table["model"].map(lambda m: models[m]["role"]))
    return table


def transfer_table(frames: list[pd.DataFrame], models: dict, layers: pd.DataFrame, pair_info: list[dict]) -> pd.DataFrame:
    """Each pair's 2x2 transfer rows, with the ``direction`` of each: native (a model's
    probe on its own activations), forward (a base model's probe on a post-trained model's
    activations), backward (the reverse) or lateral."""
    relation = {(p["source"], p["target"]): p["direction"] for p in pair_info}
    table = _annotate(concat(frames, TRANSFER_COLUMNS), "target", models, probe_layers(layers))
    table.insert(table.columns.get_loc("eval_model") + 1, "direction",
                 ["native" if a == b else relation[(a, b)] for a, b in zip(table["probe_model"], table["eval_model"])])
    return table


def cosine_table(frames: list[pd.DataFrame], models: dict, layers: pd.DataFrame) -> pd.DataFrame:
    return _annotate(concat(frames, COSINE_COLUMNS), "target", models, probe_layers(layers))


# -------------------------------------------------------------------------- the score

SUBSETS = ("true_to_false", "false_to_true", "average")


def steering_scores(labels: Sequence[int], p_diff_base: np.ndarray, p_diff_steered: np.ndarray) -> pd.DataFrame:
    """The paper's normalised score per direction of push, plus a per-statement flip rate.

    * ``true_to_false`` (true statements, vector subtracted):
      ``(mean P_diff steered - mean P_diff base) / (-1 - mean P_diff base)``;
    * ``false_to_true`` (false statements, vector added): the same over ``(+1 - base)``;
    * ``average``: the mean of the two.

    1.0 means the mean P_diff was pushed all the way to -1 / +1. ``flip_rate``: among the
    statements the model answered as labelled at baseline (P_diff's sign matches the
    label), the fraction whose sign the steering reversed (``average``: pooled over both).

    Returns rows ``subset, p_diff_base, p_diff_steered, score, flip_rate, n, n_flippable,
    n_flipped``."""
    y = np.asarray(labels)
    base, steered = np.asarray(p_diff_base), np.asarray(p_diff_steered)
    rows = []
    for subset, label, target in (("true_to_false", 1, -1.0), ("false_to_true", 0, 1.0)):
        m = y == label
        b, s = base[m], steered[m]
        if not m.any():
            rows.append({"subset": subset, "p_diff_base": np.nan, "p_diff_steered": np.nan, "score": np.nan,
                         "flip_rate": np.nan, "n": 0, "n_flippable": 0, "n_flipped": 0})
            continue
        gap = target - b.mean()
        correct = np.sign(b) == -np.sign(target)
        flipped = correct & (np.sign(s) == np.sign(target))
        rows.append({"subset": subset, "p_diff_base": b.mean(), "p_diff_steered": s.mean(),
                     "score": (s.mean() - b.mean()) / gap if gap != 0 else np.nan,
                     "flip_rate": flipped.sum() / correct.sum() if correct.any() else np.nan,
                     "n": int(m.sum()), "n_flippable": int(correct.sum()), "n_flipped": int(flipped.sum())})
    flippable, flips = sum(r["n_flippable"] for r in rows), sum(r["n_flipped"] for r in rows)
    avg = {"subset": "average", "p_diff_base": np.nan, "p_diff_steered": np.nan,
           "score": np.mean([r["score"] for r in rows]), "flip_rate": flips / flippable if flippable else np.nan,
           "n": sum(r["n"] for r in rows), "n_flippable": flippable, "n_flipped": flips}
    return pd.DataFrame(rows + [avg])
