"""The truth stage's tidy tables over all models and pairs: probe accuracy per model,
the families' layers, probe transfer and direction cosines per pair. Pure pandas on what
the jobs wrote; the rule script only reads and writes files."""

from __future__ import annotations

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
