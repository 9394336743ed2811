"""All models' per-neuron statistics, their entropy neurons over the (p, n) grid, and the
IoU of every model pair."""

import numpy as np
import pandas as pd

from ptmech import io, logs, premises
from ptmech.confidence import neurons as cf

log = logs.to_file(snakemake.log[0])
p = snakemake.params
meta = pd.DataFrame.from_dict(p.models, orient="index").rename_axis("model").reset_index()
stats = {m: pd.read_csv(snakemake.input[m], sep="\t") for m in p.models}
neurons = pd.concat([df.assign(model=m) for m, df in stats.items()], ignore_index=True)
io.write_table(meta.merge(neurons, on="model"), snakemake.output.neurons)

grid = p.selection["grid"]
selected = cf.selection_grid(stats, grid["top_norm_fraction"], grid["n_neurons"])
# premise: the entropy neurons stand out from their layer (a far lower logit variance)
max_z = p.premises["entropy_max_z"]
selected["logit_var_median_z"], selected[premises.COLUMN] = np.nan, ""
for (m, frac, n), group in selected.groupby(["model", "top_norm_fraction", "n_neurons"], sort=False):
    stat = stats[m]
    z = premises.entropy_z(stat["logit_var"].to_numpy(), np.flatnonzero(stat["neuron"].isin(group["neuron"]).to_numpy()))
    selected.loc[group.index, "logit_var_median_z"] = z
    selected.loc[group.index, premises.COLUMN] = premises.entropy_outliers(z, max_z)
default_cells = selected[(selected["top_norm_fraction"] == p.selection["top_norm_fraction"])
                         & (selected["n_neurons"] == p.selection["n_neurons"])]
for m, reason in default_cells.groupby("model")[premises.COLUMN].first().items():
    if reason:
        log.warning("%s: premise not met: %s", m, reason)
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
