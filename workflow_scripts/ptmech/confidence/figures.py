"""Figures of the confidence stage: the norm-vs-LogitVar scatter (the paper's Figure 1(c)
style), the Venn diagram of two or three models' entropy neurons (Figure 1(d)), the IoU over
the (p, n) grid, and the ablation effects. Each function takes tidy tables and returns a
matplotlib Figure; the caller saves it."""

from __future__ import annotations

import textwrap

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.patches import Circle  # noqa: E402

from .. import figures  # noqa: E402
from .selection import norm_candidates, venn_regions  # noqa: E402

ENTROPY_COLOUR = "#d62728"


def scatter(stats: pd.DataFrame, selected: list[int], top_fraction: float, title: str = ""):
    """Norm (x) against LogitVar (log y) of every last-layer neuron, with marginal
    distributions; the norm candidates' threshold as a dashed line and the entropy neurons
    ``selected`` in red with their indices."""
    stats = stats.assign(kind=np.where(stats["neuron"].isin(selected), "entropy neuron",
                                       np.where(np.isin(np.arange(len(stats)),
                                                        norm_candidates(stats["norm"], top_fraction)),
                                                f"top {top_fraction:g} by norm", "other")))
    stats["log10_logit_var"] = np.log10(stats["logit_var"].clip(lower=1e-30))
    palette = {"other": "#9e9e9e", f"top {top_fraction:g} by norm": "#1f77b4", "entropy neuron": ENTROPY_COLOUR}
    grid = sns.JointGrid(data=stats, x="norm", y="log10_logit_var", hue="kind", palette=palette,
                         height=4.5, ratio=4)
    grid.plot_joint(sns.scatterplot, s=10, linewidth=0, alpha=0.8)
    grid.plot_marginals(sns.histplot, element="step", fill=False, common_norm=False)
    ax = grid.ax_joint
    threshold = np.quantile(stats["norm"], 1.0 - top_fraction)
    ax.axvline(threshold, ls="--", lw=0.8, color="k")
    for _, row in stats[stats["kind"] == "entropy neuron"].iterrows():
        ax.annotate(str(int(row["neuron"])), (row["norm"], row["log10_logit_var"]), fontsize=6,
                    xytext=(2, 2), textcoords="offset points", color=ENTROPY_COLOUR)
    ax.set_xlabel("norm of the output weights ||w_i||")
    ax.set_ylabel("log10 LogitVar (variance of cos(w_i, W_U))")
    if ax.get_legend():   # into the empty corner above the right marginal
        sns.move_legend(ax, "center", bbox_to_anchor=(1.13, 1.13), title=None, fontsize=6,
                        frameon=False, markerscale=1.5)
    grid.figure.suptitle(textwrap.fill(title, 60), fontsize=8)
    grid.figure.tight_layout()
    return grid.figure


# centres of the circles, and where each region's label goes, for 2 and 3 sets
_VENN = {
    2: {"centres": [(-0.55, 0.0), (0.55, 0.0)],
        "labels": {(0,): (-1.0, 0.0), (1,): (1.0, 0.0), (0, 1): (0.0, 0.0)}},
    3: {"centres": [(-0.55, 0.35), (0.55, 0.35), (0.0, -0.6)],
        "labels": {(0,): (-1.05, 0.65), (1,): (1.05, 0.65), (2,): (0.0, -1.2), (0, 1): (0.0, 0.85),
                   (0, 2): (-0.75, -0.45), (1, 2): (0.75, -0.45), (0, 1, 2): (0.0, 0.05)}},
}


def venn(sets: dict[str, set[int]], models: dict, title: str = ""):
    """A Venn diagram of 2 or 3 models' entropy-neuron sets drawn with plain circles in the
    models' colours (``models``: name -> {family, role}); each region shows its count and
    neuron indices."""
    names = list(sets)
    if len(names) not in _VENN:
        raise ValueError(f"a Venn diagram takes 2 or 3 sets, got {len(names)}")
    layout = _VENN[len(names)]
    fig, ax = plt.subplots(figsize=(5.5, 5.0))
    colours = [figures.model_colours(models)[m] for m in names]
    for (x, y), colour, name in zip(layout["centres"], colours, names):
        ax.add_patch(Circle((x, y), 1.0, facecolor=colour, alpha=0.35, edgecolor=colour, lw=1.5))
        dy = 1.08 if y >= 0 else -1.15
        ax.text(x, y + dy, name, ha="center", va="bottom" if y >= 0 else "top", fontsize=9, weight="bold")
    for key, members in venn_regions(sets).items():
        idx = tuple(names.index(n) for n in key)
        x, y = layout["labels"][idx]
        body = textwrap.fill(", ".join(map(str, members)), 14)
        ax.text(x, y, f"{len(members)}\n{body}", ha="center", va="center", fontsize=6.5)
    ax.set_xlim(-1.9, 1.9)
    ax.set_ylim(-1.9, 1.7)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title("\n".join(textwrap.fill(line, 70) for line in title.split("\n")), fontsize=8)
    fig.tight_layout()
    return fig


def iou_heatmaps(iou: pd.DataFrame, default: tuple[float, int] | None = None):
    """One heatmap per model pair: IoU of the entropy-neuron sets over the grid of p (rows)
    and n (columns); the default (p, n) is outlined."""
    pairs = list(iou[["model_a", "model_b"]].drop_duplicates().itertuples(index=False))
    fig, axes = plt.subplots(1, len(pairs), figsize=(3.6 * len(pairs) + 0.6, 3.2), squeeze=False)
    for ax, (a, b) in zip(axes[0], pairs):
        sub = iou[(iou["model_a"] == a) & (iou["model_b"] == b)]
        table = sub.pivot(index="top_norm_fraction", columns="n_neurons", values="iou").sort_index()
        sns.heatmap(table, ax=ax, vmin=0, vmax=1, cmap="viridis", annot=True, fmt=".2f",
                    annot_kws={"fontsize": 7}, cbar=ax is axes[0][-1])
        if default is not None and default[0] in table.index and default[1] in table.columns:
            r, c = list(table.index).index(default[0]), list(table.columns).index(default[1])
            ax.add_patch(plt.Rectangle((c, r), 1, 1, fill=False, edgecolor="w", lw=2))
        ax.set_title(f"{a} vs {b}", fontsize=8)
        ax.set_xlabel("n (lowest LogitVar)")
        ax.set_ylabel("p (top fraction by norm)")
    fig.tight_layout()
    return fig


def ablation_bars(effects: pd.DataFrame, models: dict):
    """Mean change in next-token entropy and loss when each entropy neuron is mean-ablated,
    total effect and direct effect (final norm scale frozen) in separate panels, the
    family's models side by side (``models``: name -> {family, role}, in order, in their
    colours); random neurons pooled into one bar (mean and standard deviation over the
    neurons). No wider than the report shows (ptmech.figures.MAX_WIDTH)."""
    df = effects[effects["group"].isin(["entropy", "random"])].copy()
    df["neuron_label"] = np.where(df["group"] == "entropy", df["neuron"].astype(str), "random")
    order = sorted(df.loc[df["group"] == "entropy", "neuron"].unique())
    order = [str(i) for i in order] + (["random"] if (df["group"] == "random").any() else [])
    names = figures.in_model_order(df["model"], models)
    height = 2.6
    width = min(max(1.6 * height, 0.22 * height * len(order) * len(names) / 2), figures.MAX_WIDTH / 2)
    grid = sns.catplot(data=df, kind="bar", x="neuron_label", y="change", hue="model", hue_order=names,
                       row="metric", row_order=["entropy", "loss"], col="effect", col_order=["total", "direct"],
                       order=order, errorbar="sd", height=height, aspect=width / height,
                       sharey="row", palette=figures.model_colours(models), legend_out=False)
    grid.set_axis_labels("last-layer neuron", "mean change when ablated")
    grid.set_titles("{row_name}: {col_name} effect")
    for ax in grid.axes.flat:
        ax.axhline(0, color="k", lw=0.6)
        ax.tick_params(axis="x", labelrotation=90, labelsize=8)
    sns.move_legend(grid, "lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(names), title=None, frameon=False)
    grid.figure.tight_layout()
    return grid.figure
