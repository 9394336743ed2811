"""Figures of the refusal stage: refusal scores per target and condition, the cosine between
models' directions per residual index, and the PCA picture of Figure 1(c). Each function
takes tidy tables or arrays and returns a matplotlib Figure; the caller saves it. ``models``
is name -> {family, role} in config order: each model's colour and place (ptmech.figures)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from .. import figures  # noqa: E402

PANELS = (("harmful", "ablation", "directional ablation on harmful prompts"),
          ("harmless", "addition", "activation addition on harmless prompts"))
KIND_MARK = {"native": "own", "forward": "fwd", "backward": "bwd", "lateral": "lat", "baseline": ""}


def scores_figure(scores: pd.DataFrame, models: dict, title: str = ""):
    """Grouped bars: refusal score (fraction of test generations refusing) of each target
    model (x) with no intervention and with each family member's direction (hue), one panel
    per operation. Bars are marked own / fwd (base -> post) / bwd (post -> base) / lat."""
    scores = scores[scores["default_coefficient"].astype(bool)]
    targets = figures.in_model_order(scores["target"], models)
    sources = ["baseline"] + figures.in_model_order(set(scores["source"].fillna("")) - {""}, models)
    colours = {"baseline": figures.BASELINE_COLOUR, **figures.model_colours(models)}
    fig, axes = plt.subplots(1, 2, figsize=figures.capped(3.2 + 1.6 * len(targets) * len(sources) / 3, 3.6),
                             sharey=True, squeeze=False)
    width = 0.8 / len(sources)
    labelled: set[str] = set()
    for ax, (instructions, operation, label) in zip(axes[0], PANELS):
        panel = scores[(scores["instructions"] == instructions)
                       & scores["operation"].isin(["none", operation])]
        for j, source in enumerate(sources):
            for i, target in enumerate(targets):
                row = panel[(panel["target"] == target) & ((panel["operation"] == "none") if source == "baseline"
                                                           else (panel["source"] == source))]
                if row.empty:
                    continue
                x, y = i - 0.4 + width * (j + 0.5), float(row["refusal_score"].iloc[0])
                ax.bar(x, y, width, color=colours[source], label=None if source in labelled else source)
                labelled.add(source)
                ax.text(x, y + 0.01, KIND_MARK.get(row["direction"].iloc[0], ""), ha="center", va="bottom",
                        fontsize=6, rotation=90)
        ax.set_xticks(range(len(targets)), targets, rotation=20, ha="right", fontsize=7)
        ax.set_ylim(0, 1.15)
        ax.set_title(label, fontsize=8)
        ax.set_xlabel("target model")
    axes[0][0].set_ylabel("refusal score (fraction refusing)")
    uniq = {}
    for ax in axes[0]:
        uniq.update(zip(*reversed(ax.get_legend_handles_labels())))
    uniq = {s: uniq[s] for s in sources if s in uniq}
    fig.legend(uniq.values(), [f"{s} direction" if s != "baseline" else "no intervention" for s in uniq],
               loc="upper center", ncol=min(4, len(uniq)), fontsize=7, frameon=False)
    fig.suptitle(title, fontsize=9, y=0.01, va="bottom")
    fig.tight_layout(rect=(0, 0.03, 1, 0.92))
    return fig


def cosine_figure(cosine: pd.DataFrame, models: dict, title: str = ""):
    """cos(r_a(k), r_b(k)) against the residual index k for each pair of models, each
    model's direction read at its own selected position; crosses mark the selected k."""
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for (a, b), frame in cosine.groupby(["model_a", "model_b"], sort=False):
        line, = ax.plot(frame["k"], frame["cosine"], marker=".", label=f"{a} vs {b}",
                        color=figures.pair_colour(a, b, models))
        for col in ("k_selected_a", "k_selected_b"):
            sel = frame[frame["k"] == frame[col].iloc[0]]
            ax.plot(sel["k"], sel["cosine"], "x", color=line.get_color(), ms=8)
    ax.axhline(0, color="k", lw=0.5)
    ax.set_ylim(-1.05, 1.05)
    ax.set_xlabel("residual index k (input of block k)")
    ax.set_ylabel("cosine of refusal directions")
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def pca_figure(harmful: np.ndarray, harmless: np.ndarray, directions: dict[str, np.ndarray], models: dict,
               labels: dict[str, str] | None = None, title: str = ""):
    """Figure 1(c): harmful [N, d] and harmless [M, d] activations projected on their first
    two principal components, with each model's unit direction [d] (``directions``: model
    -> direction) drawn from the data's centre in its colour, projected on the same plane (a
    short arrow = a direction mostly outside it), named in the legend (``labels``: model ->
    its legend text), so that near-parallel arrows keep readable names."""
    x = np.concatenate([harmful, harmless]).astype(np.float64)
    centre = x.mean(0)
    _, sv, vt = np.linalg.svd(x - centre, full_matrices=False)
    pcs = vt[:2]
    proj = (x - centre) @ pcs.T
    explained = sv[:2] ** 2 / (sv ** 2).sum()
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    n = len(harmful)
    ax.scatter(proj[:n, 0], proj[:n, 1], s=10, alpha=0.7, color="#d62728", label="harmful")
    ax.scatter(proj[n:, 0], proj[n:, 1], s=10, alpha=0.7, color="#1f77b4", label="harmless")
    length = 0.45 * np.abs(proj).max()
    colours = figures.model_colours(models)
    for name in figures.in_model_order(directions, models):
        r = np.asarray(directions[name], dtype=np.float64)
        xy = pcs @ (r / np.linalg.norm(r)) * length
        ax.annotate("", xy=xy, xytext=(0, 0), arrowprops=dict(arrowstyle="->", color=colours[name], lw=1.8))
        ax.plot([], [], color=colours[name], lw=1.8, label=f"direction of {(labels or {}).get(name, name)}")
    ax.set_xlabel(f"PC1 ({explained[0]:.0%})")
    ax.set_ylabel(f"PC2 ({explained[1]:.0%})")
    ax.legend(fontsize=7, loc="best")
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    return fig
