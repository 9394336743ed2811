"""Venn diagram of the entropy neurons of a family's 2 or 3 models."""

import pandas as pd

from ptmech import confidence as cf, confidence_plots as plots, io, logs

log = logs.to_file(snakemake.log[0])
sel = snakemake.params.selection
p, n = sel["top_norm_fraction"], sel["n_neurons"]
sets = {}
for model in snakemake.input.keys():
    stats = pd.read_csv(snakemake.input[model], sep="\t")
    sets[model] = set(stats["neuron"].to_numpy()[cf.entropy_neurons(stats["norm"], stats["logit_var"], p, n)].tolist())
names = list(sets)
ious = ", ".join(f"IoU({a}, {b}) = {cf.iou(sets[a], sets[b]):.2f}"
                 for i, a in enumerate(names) for b in names[i + 1:])
fig = plots.venn(sets, title=f"entropy neurons (p = {p:g}, n = {n})\n{ious}")
with io.atomic_path(snakemake.output.png) as tmp:
    fig.savefig(tmp, dpi=150, format="png", bbox_inches="tight")
