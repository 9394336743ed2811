"""Knowledge patching heatmaps (METHODS.md §3.5): means over pairs, the paper's binned
normalisation, difference heatmaps between models with per-role-group statistics, and
their figures.

A heatmap is ``[L, T]``: row ``i`` = residual index k = i + 1 (the output of decoder block
i, the paper's layer i; patching replaces block outputs, so k = 1..L), column ``j`` =
position j - T of the patched window (earliest first; the last column is the last token).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

GROUPS = ("subject", "object", "last", "other")
COMPARISONS = {
    # name: (x, y) as (source role, target role); diff = x - y
    "base_vs_post": (("base", "base"), ("post", "post")),
    "base_to_post_vs_post": (("base", "post"), ("post", "post")),
    "post_to_base_vs_base": (("post", "base"), ("base", "base")),
}


def mean_heatmap(ld: np.ndarray) -> np.ndarray:
    """[L, T] mean over pairs of ``ld`` [P, T, L]."""
    return np.asarray(ld, dtype=np.float64).mean(axis=0).T


def binned(heatmap: np.ndarray, bins: int = 20) -> np.ndarray:
    """The paper's normalisation of one heatmap: split [min - 1e-5, max + 1e-5] into
    ``bins`` equal bins; values in the lower half of the bins become 0, the bins of the
    upper half 1/(bins/2), 2/(bins/2), ..., 1. So the result lies in {0, 0.1, ..., 1}
    for 20 bins: only the top half of the range survives, in coarse steps."""
    if bins < 2 or bins % 2:
        raise ValueError(f"bins must be an even number >= 2, got {bins}")
    lo, hi = heatmap.min() - 1e-5, heatmap.max() + 1e-5
    b = np.clip(np.floor((heatmap - lo) / (hi - lo) * bins), 0, bins - 1)  # 0-based bin
    half = bins // 2
    return np.maximum(b - (half - 1), 0) / half


def tidy_heatmap(ld: np.ndarray, columns: Sequence[dict], bins: int = 20) -> pd.DataFrame:
    """One row per (k, position) cell of ``ld`` [P, T, L]: ``k`` (residual index 1..L, the
    output of block k - 1), ``position``, ``column``, ``role``, ``group``, ``mean_ld``,
    ``sem_ld`` (standard error over pairs) and ``normalised`` (``binned``)."""
    P, T, L = ld.shape
    mean = mean_heatmap(ld)
    sem = (ld.std(axis=0, ddof=1).T / np.sqrt(P)) if P > 1 else np.full_like(mean, np.nan)
    norm = binned(mean, bins)
    rows = []
    for l in range(L):
        for j in range(T):
            rows.append({"k": l + 1, "position": j - T, "column": j, "role": columns[j]["role"],
                         "group": columns[j]["group"], "mean_ld": mean[l, j], "sem_ld": sem[l, j],
                         "normalised": norm[l, j]})
    return pd.DataFrame(rows)


def matrix(table: pd.DataFrame, value: str) -> np.ndarray:
    """[L, T] of column ``value`` from one heatmap's tidy rows."""
    return table.pivot(index="k", columns="column", values=value).sort_index().sort_index(axis=1).to_numpy()


def group_statistics(x: np.ndarray, y: np.ndarray, groups: Sequence[str]) -> list[dict]:
    """max |x - y| and Pearson r between x and y over all cells and over the cells of each
    role group's columns (subject, object, last, other). r is NaN where either side is
    constant."""
    groups = np.asarray(groups)
    out = []
    for g in ("all",) + GROUPS:
        cols = np.ones(len(groups), bool) if g == "all" else groups == g
        if not cols.any():
            continue
        a, b = x[:, cols].ravel(), y[:, cols].ravel()
        r = np.nan if a.std() == 0 or b.std() == 0 else float(np.corrcoef(a, b)[0, 1])
        out.append({"group": g, "max_abs_diff": float(np.abs(a - b).max()), "pearson_r": r, "n_cells": int(a.size)})
    return out


def comparisons(models: dict[str, dict], available: set[tuple[str, str]]) -> list[dict]:
    """The difference heatmaps to draw: for each base model b and each post-trained model p
    of its family, ``base_vs_post`` (b,b) - (p,p), ``base_to_post_vs_post`` (b->p) - (p,p)
    and ``post_to_base_vs_base`` (p->b) - (b,b); only those whose two heatmaps exist.
    ``models``: name -> {family, role}; ``available``: (source, target) pairs computed."""
    out = []
    for b, bspec in models.items():
        if bspec["role"] != "base":
            continue
        for p, pspec in models.items():
            if p == b or pspec["family"] != bspec["family"] or pspec["role"] == "base":
                continue
            name_of = {"base": b, "post": p}
            for comp, (x, y) in COMPARISONS.items():
                xs, ys = tuple(name_of[r] for r in x), tuple(name_of[r] for r in y)
                if xs in available and ys in available:
                    out.append({"family": bspec["family"], "comparison": comp, "base": b, "post": p,
                                "x_source": xs[0], "x_target": xs[1], "y_source": ys[0], "y_target": ys[1]})
    return out


def difference_table(heatmaps: pd.DataFrame, models: dict[str, dict]) -> pd.DataFrame:
    """Tidy statistics of every comparison (``comparisons``) on every dataset, on the
    binned (``normalised``) and the raw (``mean_ld``) heatmaps: one row per (dataset,
    comparison, base, post, scale, group) with ``max_abs_diff`` and ``pearson_r``."""
    rows = []
    for dataset, per in heatmaps.groupby("dataset", sort=True):
        available = set(zip(per["source"], per["target"]))
        for c in comparisons(models, available):
            x = per[(per.source == c["x_source"]) & (per.target == c["x_target"])]
            y = per[(per.source == c["y_source"]) & (per.target == c["y_target"])]
            groups = x.drop_duplicates("column").sort_values("column")["group"].tolist()
            for scale, value in (("binned", "normalised"), ("raw", "mean_ld")):
                for s in group_statistics(matrix(x, value), matrix(y, value), groups):
                    rows.append({"dataset": dataset, **c, "scale": scale, **s})
    cols = ["dataset", "family", "comparison", "base", "post", "x_source", "x_target", "y_source", "y_target",
            "scale", "group", "max_abs_diff", "pearson_r", "n_cells"]
    return pd.DataFrame(rows, columns=cols)


# ------------------------------------------------------------------------------ figures

def _heatmap(ax, m: np.ndarray, roles: Sequence[str], vmin: float, vmax: float, title: str, cbar_label: str,
             cbar: bool = True) -> None:
    import seaborn as sns

    sns.heatmap(m, ax=ax, cmap="RdBu_r", center=0, vmin=vmin, vmax=vmax, cbar=cbar,
                cbar_kws={"label": cbar_label} if cbar else None,
                xticklabels=list(roles), yticklabels=[str(i + 1) if i % max(1, len(m) // 16) == 0 else ""
                                                     for i in range(len(m))])
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("")
    ax.set_ylabel("k (output of block k - 1)")
    ax.tick_params(axis="x", labelrotation=90, labelsize=7)
    ax.tick_params(axis="y", labelrotation=0, labelsize=7)


def plot_heatmaps(heatmaps: pd.DataFrame, models: Sequence[str], value: str, path: str, title: str) -> None:
    """A grid of patching heatmaps, row = source model, column = target model (the
    diagonal is single-model patching), of ``value`` (``normalised`` on [-1, 1], or
    ``mean_ld`` on a symmetric LD scale), role labels on the x axis; the unmet premises of
    its rows under it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .. import figures

    n = len(models)
    T = heatmaps["column"].nunique()
    L = heatmaps["k"].nunique()
    fig, axes = plt.subplots(n, n, figsize=figures.capped(1.2 + 0.32 * T * n + 1.2 * n, 1.0 + (0.18 * L + 1.6) * n),
                             squeeze=False)
    if value == "normalised":
        vmin, vmax, label = -1.0, 1.0, "normalised LD"
    else:
        vmax = float(np.nanmax(np.abs(heatmaps[value]))) or 1.0
        completion = "query" in heatmaps and (heatmaps["query"] == "completion").all()
        vmin, label = -vmax, "logit(true answer) - logit(false answer)" if completion else "log P(TRUE)/P(FALSE)"
    for i, src in enumerate(models):
        for j, tgt in enumerate(models):
            ax = axes[i][j]
            sel = heatmaps[(heatmaps.source == src) & (heatmaps.target == tgt)]
            if sel.empty:
                ax.axis("off")
                continue
            roles = sel.drop_duplicates("column").sort_values("column")["role"].tolist()
            name = src if src == tgt else f"{src} → {tgt}"
            _heatmap(ax, matrix(sel, value), roles, vmin, vmax, name, label)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    figures.save(fig, path, notes=figures.table_notes(heatmaps, ["source", "target"]))


def plot_differences(heatmaps: pd.DataFrame, differences: pd.DataFrame, path: str, title: str) -> None:
    """One row per (base, post) model pair, one column per comparison: the difference of
    the binned heatmaps (x - y, on [-1, 1]), titled with max |diff| per role group and
    Pearson r."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .. import figures

    keys = differences.drop_duplicates(["base", "post"])[["base", "post"]].values.tolist()
    comps = [c for c in COMPARISONS if c in set(differences["comparison"])]
    T = heatmaps["column"].nunique()
    L = heatmaps["k"].nunique()
    nr, nc = max(1, len(keys)), max(1, len(comps))
    fig, axes = plt.subplots(nr, nc, figsize=figures.capped(1.5 + (0.32 * T + 1.4) * nc, 1.0 + (0.18 * L + 2.0) * nr),
                             squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    if not keys:
        axes[0][0].text(0.5, 0.5, "no base / post-trained model pair in this family", ha="center", va="center")
    for i, (b, p) in enumerate(keys):
        for j, comp in enumerate(comps):
            d = differences[(differences.base == b) & (differences.post == p) & (differences.comparison == comp)
                            & (differences.scale == "binned")]
            if d.empty:
                continue
            r0 = d.iloc[0]
            x = heatmaps[(heatmaps.source == r0.x_source) & (heatmaps.target == r0.x_target)]
            y = heatmaps[(heatmaps.source == r0.y_source) & (heatmaps.target == r0.y_target)]
            roles = x.drop_duplicates("column").sort_values("column")["role"].tolist()
            stats = {g: v for g, v in zip(d.group, d.max_abs_diff)}
            r = float(d[d.group == "all"].pearson_r.iloc[0])
            name = lambda s, t: s if s == t else f"{s}→{t}"  # noqa: E731
            sub = " ".join(f"{g[:4]} {stats[g]:.1f}" for g in ("subject", "object", "last") if g in stats)
            t = (f"{name(r0.x_source, r0.x_target)} − {name(r0.y_source, r0.y_target)}\n"
                 f"max|diff| {sub}; r={r:.2f}")
            axes[i][j].axis("on")
            _heatmap(axes[i][j], matrix(x, "normalised") - matrix(y, "normalised"), roles, -1, 1, t, "difference")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    figures.save(fig, path, notes=figures.table_notes(heatmaps, ["source", "target"]))
