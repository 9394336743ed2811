"""Which neurons are entropy neurons, and how two models' sets overlap: plain arrays and
tables, no torch (METHODS.md §6). ``ptmech.confidence.neurons`` computes the statistics these
read (norm and LogitVar per neuron) and re-exports them; tables and figures import them from
here so that their jobs load no model library."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

def norm_candidates(norm: np.ndarray, top_fraction: float) -> np.ndarray:
    """Indices of neurons whose norm is strictly above the (1 - p) quantile of all norms
    (linear interpolation, as torch.quantile)."""
    norm = np.asarray(norm, dtype=float)
    return np.flatnonzero(norm > np.quantile(norm, 1.0 - top_fraction))


def entropy_neurons(norm: np.ndarray, logit_var: np.ndarray, top_fraction: float = 0.25,
                    n: int = 10) -> np.ndarray:
    """The ``n`` norm candidates (top ``top_fraction`` by norm) with the lowest LogitVar,
    lowest first (ties by index). Fewer than ``n`` when there are fewer candidates (the
    paper's code returned a DataFrame then)."""
    cand = norm_candidates(norm, top_fraction)
    var = np.asarray(logit_var, dtype=float)[cand]
    order = np.lexsort((cand, var))
    return cand[order[:n]]


def iou(a: Sequence[int], b: Sequence[int]) -> float:
    """|A ∩ B| / |A ∪ B| of two neuron-index sets (1.0 for two empty sets)."""
    a, b = set(map(int, a)), set(map(int, b))
    union = a | b
    return len(a & b) / len(union) if union else 1.0


def selection_grid(stats: dict[str, pd.DataFrame], fractions: Sequence[float],
                   ns: Sequence[int]) -> pd.DataFrame:
    """Entropy neurons of each model at each (p, n): one row per (model, p, n, rank) with
    ``neuron``, ``norm``, ``logit_var``. ``stats`` maps model -> :func:`neuron_statistics`."""
    rows = []
    for model, df in stats.items():
        for p in fractions:
            for n in ns:
                sel = entropy_neurons(df["norm"].to_numpy(), df["logit_var"].to_numpy(), p, n)
                for rank, i in enumerate(sel):
                    rows.append({"model": model, "top_norm_fraction": p, "n_neurons": n, "rank": rank,
                                 "neuron": int(df["neuron"].iat[i]), "norm": df["norm"].iat[i],
                                 "logit_var": df["logit_var"].iat[i]})
    return pd.DataFrame(rows, columns=["model", "top_norm_fraction", "n_neurons", "rank", "neuron",
                                       "norm", "logit_var"])


IOU_COLUMNS = ["model_a", "model_b", "top_norm_fraction", "n_neurons", "n_a", "n_b", "intersection", "union", "iou"]


def iou_grid(selected: pd.DataFrame, pairs: Sequence[tuple[str, str]]) -> pd.DataFrame:
    """IoU of the entropy-neuron sets of each (unordered) model pair at each (p, n) of
    ``selected`` (:func:`selection_grid`): columns ``model_a``, ``model_b``,
    ``top_norm_fraction``, ``n_neurons``, ``n_a``, ``n_b``, ``intersection``, ``union``,
    ``iou``; no rows, but those columns, when there is no pair (a one-model family)."""
    sets = {key: set(g["neuron"]) for key, g in
            selected.groupby(["model", "top_norm_fraction", "n_neurons"])}
    grid = selected[["top_norm_fraction", "n_neurons"]].drop_duplicates().itertuples(index=False)
    grid = list(grid)
    rows = []
    for a, b in pairs:
        for p, n in grid:
            sa, sb = sets.get((a, p, n), set()), sets.get((b, p, n), set())
            rows.append({"model_a": a, "model_b": b, "top_norm_fraction": p, "n_neurons": n,
                         "n_a": len(sa), "n_b": len(sb), "intersection": len(sa & sb),
                         "union": len(sa | sb), "iou": iou(sa, sb)})
    return pd.DataFrame(rows, columns=IOU_COLUMNS)


def venn_regions(sets: dict[str, set[int]]) -> dict[tuple[str, ...], list[int]]:
    """The Venn regions of 2 or 3 named sets: for each non-empty combination of names, the
    sorted elements that belong to exactly those sets."""
    names = list(sets)
    regions: dict[tuple[str, ...], list[int]] = {}
    everything = set().union(*sets.values())
    for x in everything:
        key = tuple(n for n in names if x in sets[n])
        regions.setdefault(key, []).append(int(x))
    return {k: sorted(v) for k, v in regions.items()}



def spread_rows(n_rows: int, cap: int | None) -> np.ndarray:
    """Up to ``cap`` row indices spread evenly over ``n_rows`` rows (all if no cap), so a
    capped sample covers the whole of a dataset sorted by label or kind."""
    if not cap or cap >= n_rows:
        return np.arange(n_rows)
    return np.unique(np.linspace(0, n_rows - 1, cap).round().astype(int))


def ablation_neurons(stats: pd.DataFrame, top_fraction: float, n: int, mode: str = "selected",
                     n_random: int = 0, seed: int = 0) -> pd.DataFrame:
    """Which neurons to ablate: columns ``neuron`` and ``group`` (``entropy`` for the
    entropy neurons at (p, n); ``random``: ``n_random`` neurons drawn with ``seed`` from all
    of the layer, the same indices for every model of one width; ``other``: the rest of the
    layer when ``mode`` is ``all``)."""
    norm, var = stats["norm"].to_numpy(), stats["logit_var"].to_numpy()
    chosen = [int(stats["neuron"].iat[i]) for i in entropy_neurons(norm, var, top_fraction, n)]
    rows = [{"neuron": i, "group": "entropy"} for i in chosen]
    if mode == "all":
        rows += [{"neuron": int(i), "group": "other"} for i in stats["neuron"] if int(i) not in chosen]
    elif mode == "selected":
        rng = np.random.default_rng(seed)
        layer = stats["neuron"].to_numpy()
        draw = rng.choice(layer, size=min(n_random, len(layer)), replace=False) if n_random else []
        rows += [{"neuron": int(i), "group": "random"} for i in sorted(draw) if int(i) not in chosen]
    else:
        raise ValueError(f"unknown ablation neuron mode {mode!r} (use selected or all)")
    return pd.DataFrame(rows, columns=["neuron", "group"])
