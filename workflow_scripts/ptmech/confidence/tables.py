"""The confidence stage's tidy tables over all models: every neuron's statistics, the
entropy neurons at each (p, n) of the grid with their outlier premise, and the IoU of each
model pair. Pure pandas on the per-model statistics; the rule script only reads and writes."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .. import premises
from . import selection as cf


def _meta(models: dict) -> pd.DataFrame:
    return pd.DataFrame.from_dict(models, orient="index").rename_axis("model").reset_index()


def neurons_table(stats: dict[str, pd.DataFrame], models: dict) -> pd.DataFrame:
    """Every model's per-neuron statistics, with its family and role first."""
    neurons = pd.concat([df.assign(model=m) for m, df in stats.items()], ignore_index=True)
    return _meta(models).merge(neurons, on="model")


def selection_table(stats: dict[str, pd.DataFrame], models: dict, selection: dict, max_z: float) -> pd.DataFrame:
    """The entropy neurons of every model at every (p, n) of ``selection["grid"]``, each
    cell with the median robust z of its neurons' log LogitVar within their layer and the
    premise that they stand out (z below ``max_z``)."""
    grid = selection["grid"]
    selected = cf.selection_grid(stats, grid["top_norm_fraction"], grid["n_neurons"])
    selected["logit_var_median_z"], selected[premises.COLUMN] = np.nan, ""
    for (m, _, _), group in selected.groupby(["model", "top_norm_fraction", "n_neurons"], sort=False):
        stat = stats[m]
        z = premises.entropy_z(stat["logit_var"].to_numpy(),
                               np.flatnonzero(stat["neuron"].isin(group["neuron"]).to_numpy()))
        selected.loc[group.index, "logit_var_median_z"] = z
        selected.loc[group.index, premises.COLUMN] = premises.entropy_outliers(z, max_z)
    return _meta(models).merge(selected, on="model")


def at(table: pd.DataFrame, selection: dict) -> pd.DataFrame:
    """The rows of the default (p, n)."""
    return table[(table["top_norm_fraction"] == selection["top_norm_fraction"])
                 & (table["n_neurons"] == selection["n_neurons"])]


def iou_table(selected: pd.DataFrame, pairs: list[tuple[str, str]], models: dict) -> pd.DataFrame:
    """IoU of each pair's entropy-neuron sets at every (p, n), the pair's family first
    ("a/b" for a pair across families)."""
    iou = cf.iou_grid(selected, [tuple(x) for x in pairs])
    family = {m: v["family"] for m, v in models.items()}
    iou.insert(0, "family", [family[a] if family[a] == family[b] else f"{family[a]}/{family[b]}"
                             for a, b in zip(iou["model_a"], iou["model_b"])])
    return iou
