"""All models' per-neuron statistics, their entropy neurons over the (p, n) grid, and the
IoU of every model pair."""

import pandas as pd

from ptmech import confidence as cf, io, logs

log = logs.to_file(snakemake.log[0])
p = snakemake.params
meta = pd.DataFrame.from_dict(p.models, orient="index").rename_axis("model").reset_index()
stats = {m: pd.read_csv(snakemake.input[m], sep="\t") for m in p.models}
neurons = pd.concat([df.assign(model=m) for m, df in stats.items()], ignore_index=True)
io.write_table(meta.merge(neurons, on="model"), snakemake.output.neurons)

grid = p.selection["grid"]
selected = cf.selection_grid(stats, grid["top_norm_fraction"], grid["n_neurons"])
io.write_table(meta.merge(selected, on="model"), snakemake.output.selected)

iou = cf.iou_grid(selected, [tuple(x) for x in p.pairs])
family = {m: v["family"] for m, v in p.models.items()}
iou.insert(0, "family", [family[a] if family[a] == family[b] else f"{family[a]}/{family[b]}"
                         for a, b in zip(iou["model_a"], iou["model_b"])])
io.write_table(iou, snakemake.output.iou)
default = iou[(iou["top_norm_fraction"] == p.selection["top_norm_fraction"])
              & (iou["n_neurons"] == p.selection["n_neurons"])]
for row in default.itertuples():
    log.info("IoU(%s, %s) at p=%g, n=%d: %.3f (%d of %d)", row.model_a, row.model_b, row.top_norm_fraction,
             row.n_neurons, row.iou, row.intersection, row.union)
