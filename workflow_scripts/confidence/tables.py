"""All models' per-neuron statistics, their entropy neurons over the (p, n) grid, and the
IoU of every model pair (ptmech.confidence.tables)."""

from ptmech.warm import handoff

handoff()  # with warm starts on, the rest of this script runs in a warm child (ptmech.warm)

import pandas as pd

from ptmech import io, logs, premises
from ptmech.confidence import tables

log = logs.to_file(snakemake.log[0])
p = snakemake.params
stats = {m: pd.read_csv(snakemake.input[m], sep="\t") for m in p.models}
io.write_table(tables.neurons_table(stats, p.models), snakemake.output.neurons)

selected = tables.selection_table(stats, p.models, p.selection, p.premises["entropy_max_z"])
for m, reason in tables.at(selected, p.selection).groupby("model")[premises.COLUMN].first().items():
    if reason:
        log.warning("%s: premise not met: %s", m, reason)
io.write_table(selected, snakemake.output.selected)

iou = tables.iou_table(selected, p.pairs, p.models)
io.write_table(iou, snakemake.output.iou)
for row in tables.at(iou, p.selection).itertuples():
    log.info("IoU(%s, %s) at p=%g, n=%d: %.3f (%d of %d)", row.model_a, row.model_b, row.top_norm_fraction,
             row.n_neurons, row.iou, row.intersection, row.union)
if iou.empty:
    log.warning("no IoU: no family has two models")
