"""IoU of the entropy-neuron sets of a family's model pairs over the (p, n) grid."""

from ptmech.warm import handoff

handoff()  # with warm starts on, the rest of this script runs in a warm child (ptmech.warm)

import pandas as pd

from ptmech import figures, logs, premises
from ptmech.confidence import figures as plots, selection as cf

log = logs.to_file(snakemake.log[0])
sel = snakemake.params.selection
stats = {m: pd.read_csv(snakemake.input[m], sep="\t") for m in snakemake.input.keys()}
selected = cf.selection_grid(stats, sel["grid"]["top_norm_fraction"], sel["grid"]["n_neurons"])
iou = cf.iou_grid(selected, [tuple(x) for x in snakemake.params.pairs])
fig = plots.iou_heatmaps(iou, default=(sel["top_norm_fraction"], sel["n_neurons"]))
notes = []
for model, s in stats.items():  # the premise at the default (p, n)
    rows = cf.entropy_neurons(s["norm"], s["logit_var"], sel["top_norm_fraction"], sel["n_neurons"])
    why = premises.entropy_premise(s["logit_var"].to_numpy(), rows, snakemake.params.premises["entropy_max_z"])
    notes.append(why and f"{model}: {why}")
figures.save(fig, snakemake.output.png, notes=notes)
