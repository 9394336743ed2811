"""Figures of the truthfulness stage, each a seaborn call on one of its tidy tables, in the
report's one style (ptmech.figures: a colour per model's role, models in config order).
``models`` is name -> {family, role}, in config order."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from .. import figures  # noqa: E402


# greys, so that no push direction looks like a model's role colour
SUBSET_COLOURS = {"true_to_false": "#bdbdbd", "false_to_true": "#737373", "average": "#252525"}


def _mark_layer(ax, k, label="probe layer"):
    """The probe layer as a dotted line; integer ticks for the residual index."""
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if k is not None and not pd.isna(k):
        ax.axvline(k, color="grey", ls=":", lw=1, label=label)


def accuracy(table: pd.DataFrame, probe_k: int | None, title: str, models: dict):
    """Held-out accuracy per residual index: a line per model, a panel per held-out
    dataset (plus their mean), line style per probe kind."""
    mean = table.groupby(["model", "probe", "k"], as_index=False)["accuracy"].mean().assign(heldout="mean")
    data = pd.concat([mean, table[mean.columns]], ignore_index=True)
    order = figures.in_model_order(data["model"], models)
    g = sns.relplot(data=data, x="k", y="accuracy", hue="model", hue_order=order, palette=figures.model_colours(models),
                    style="probe", col="heldout", col_wrap=3, kind="line", markers=True, height=2.6, aspect=1.2,
                    facet_kws={"sharey": True})
    for ax in g.axes.flat:
        _mark_layer(ax, probe_k)
        ax.axhline(0.5, color="k", lw=0.6)
    g.set(ylim=(0, 1.02))
    g.set_axis_labels("k (output of block k-1)", "held-out accuracy")
    g.figure.suptitle(title, y=1.02)
    return g.figure


def cosine(table: pd.DataFrame, probe_k: int | None, title: str, models: dict):
    """Cosine of two models' truth directions per residual index: a line per pair (the
    post-trained model's colour), a panel per probe kind, the band over held-out datasets."""
    data = table.assign(pair=table["source"] + " ~ " + table["target"])
    pairs = list(dict.fromkeys(zip(data["source"], data["target"])))
    palette = {f"{a} ~ {b}": figures.pair_colour(a, b, models) for a, b in pairs}
    g = sns.relplot(data=data, x="k", y="cosine", hue="pair", hue_order=list(palette), palette=palette, col="probe",
                    kind="line", markers=True, height=3, aspect=1.3, errorbar=("pi", 100))
    for ax in g.axes.flat:
        _mark_layer(ax, probe_k)
        ax.axhline(0, color="k", lw=0.6)
    g.set(ylim=(min(-0.05, float(data["cosine"].min()) - 0.05), 1.02))
    g.set_axis_labels("k (output of block k-1)", "cosine(direction A, direction B)")
    g.figure.suptitle(title, y=1.04)
    return g.figure


def transfer(table: pd.DataFrame, source: str, target: str, probe_k: int, title: str):
    """The 2x2 matrices at the probe layer: rows = whose probe, columns = whose
    activations; a panel per held-out dataset, a row of panels per probe kind."""
    data = table[(table["k"] == probe_k) & (table["source"] == source) & (table["target"] == target)]
    kinds, held = list(dict.fromkeys(data["probe"])), list(dict.fromkeys(data["heldout"]))
    order = [source, target]
    fig, axes = plt.subplots(len(kinds), len(held), squeeze=False,
                             figsize=figures.capped(2.4 * len(held) + 1, 2.3 * len(kinds) + 0.6))
    for i, kind in enumerate(kinds):
        for j, h in enumerate(held):
            m = data[(data["probe"] == kind) & (data["heldout"] == h)].pivot(
                index="probe_model", columns="eval_model", values="accuracy").reindex(index=order, columns=order)
            ax = axes[i, j]
            sns.heatmap(m, ax=ax, vmin=0.5, vmax=1, cmap="viridis", annot=True, fmt=".2f", cbar=False, square=True)
            ax.set_title(f"{kind}, held out {h}", fontsize=9)
            ax.set_xlabel("activations of" if i == len(kinds) - 1 else "")
            ax.set_ylabel("probe of" if j == 0 else "")
            ax.tick_params(labelsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def pca(table: pd.DataFrame, title: str, models: dict, explained=None, cos: float | None = None):
    """Figure 1(b): a panel per model's statements (true / false), both models' unit
    truth directions drawn as arrows in every panel."""
    pts = table[table["kind"] == "statement"].assign(
        statement=lambda t: t["label"].astype(int).map({1: "true", 0: "false"}))
    arrows = table[table["kind"] == "direction"]
    panels = figures.in_model_order(pts["model"], models)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4), squeeze=False, sharex=True, sharey=True)
    reach = 0.9 * float(np.abs(pts[["pc1", "pc2"]].to_numpy()).max())
    colours = figures.model_colours(models)
    for ax, m in zip(axes[0], panels):
        sns.scatterplot(data=pts[pts["model"] == m], x="pc1", y="pc2", hue="statement",
                        hue_order=["true", "false"], palette={"true": "tab:blue", "false": "tab:red"},
                        s=12, alpha=0.6, ax=ax, legend=ax is axes[0, 0])
        for _, a in arrows.iterrows():
            ax.annotate("", xy=(a["pc1"] * reach, a["pc2"] * reach), xytext=(0, 0),
                        arrowprops=dict(arrowstyle="-|>", color=colours[a["model"]], lw=2))
            share = float(np.hypot(a["pc1"], a["pc2"]))
            ax.text(a["pc1"] * reach, a["pc2"] * reach, f" {a['model']} ({share:.0%} in plane)",
                    color=colours[a["model"]], fontsize=8)
        ax.set_title(f"statements of {m}", fontsize=10)
        if explained is not None:
            ax.set_xlabel(f"PC1 ({explained[0]:.0%})")
            ax.set_ylabel(f"PC2 ({explained[1]:.0%})")
    fig.suptitle(title + (f"; cos(directions) = {cos:.3f}" if cos is not None else ""))
    fig.tight_layout()
    return fig


def steering(table: pd.DataFrame, title: str, models: dict):
    """Normalised steering score per (direction source -> target model), a horizontal bar
    per push direction (true -> false, false -> true, average), a panel per dataset;
    conditions grouped by target in config order, the target's own direction first."""
    data = table.assign(condition=table["source"] + " \u2192 " + table["target"])
    rank = {m: i for i, m in enumerate(models)}
    pairs = sorted(set(zip(data["source"], data["target"])),
                   key=lambda st: (rank[st[1]], st[0] != st[1], rank[st[0]]))
    order = [f"{a} \u2192 {b}" for a, b in pairs]
    g = sns.catplot(data=data, y="condition", x="score", hue="subset", col="dataset", kind="bar", order=order,
                    hue_order=list(SUBSET_COLOURS), palette=SUBSET_COLOURS, height=1.2 + 0.45 * len(order), aspect=1.0)
    for ax in g.axes.flat:
        ax.tick_params(axis="y", labelsize=8)
        ax.axvline(1, color="grey", ls=":", lw=1)
    g.set_axis_labels("normalised score", "direction of \u2192 steered model")
    g.figure.suptitle(title, y=1.04)
    return g.figure
