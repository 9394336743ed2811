"""IoU of the entropy-neuron sets of a family's model pairs over the (p, n) grid."""

import pandas as pd

from ptmech import confidence as cf, confidence_plots as plots, io, logs

log = logs.to_file(snakemake.log[0])
sel = snakemake.params.selection
stats = {m: pd.read_csv(snakemake.input[m], sep="\t") for m in snakemake.input.keys()}
selected = cf.selection_grid(stats, sel["grid"]["top_norm_fraction"], sel["grid"]["n_neurons"])
iou = cf.iou_grid(selected, [tuple(x) for x in snakemake.params.pairs])
fig = plots.iou_heatmaps(iou, default=(sel["top_norm_fraction"], sel["n_neurons"]))
with io.atomic_path(snakemake.output.png) as tmp:
    fig.savefig(tmp, dpi=150, format="png", bbox_inches="tight")
