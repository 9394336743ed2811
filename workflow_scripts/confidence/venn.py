"""Venn diagram of the entropy neurons of a family's 2 or 3 models."""

from ptmech.warm import handoff

handoff()  # with warm starts on, the rest of this script runs in a warm child (ptmech.warm)

import pandas as pd

from ptmech import figures, logs, premises
from ptmech.confidence import figures as plots, selection as cf

log = logs.to_file(snakemake.log[0])
sel = snakemake.params.selection
p, n = sel["top_norm_fraction"], sel["n_neurons"]
sets, notes = {}, []
for model in snakemake.input.keys():
    stats = pd.read_csv(snakemake.input[model], sep="\t")
    rows = cf.entropy_neurons(stats["norm"], stats["logit_var"], p, n)
    sets[model] = set(stats["neuron"].to_numpy()[rows].tolist())
    why = premises.entropy_premise(stats["logit_var"].to_numpy(), rows, snakemake.params.premises["entropy_max_z"])
    notes.append(why and f"{model}: {why}")
names = list(sets)
ious = ", ".join(f"IoU({a}, {b}) = {cf.iou(sets[a], sets[b]):.2f}"
                 for i, a in enumerate(names) for b in names[i + 1:])
fig = plots.venn(sets, snakemake.params.models, title=f"entropy neurons (p = {p:g}, n = {n})\n{ious}")
figures.save(fig, snakemake.output.png, notes=notes)
