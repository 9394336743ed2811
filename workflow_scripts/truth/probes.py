"""Leave-one-dataset-out truth probes of one model at every cached residual index."""

from ptmech.warm import handoff

handoff()  # with warm starts on, the rest of this script runs in a warm child (ptmech.warm)

from ptmech import io, logs
from ptmech.truth import probes as truth

log = logs.to_file(snakemake.log[0])
s = snakemake.params.settings
model = snakemake.wildcards.model
table, probes = truth.sweep_caches(dict(zip(s["cache_datasets"], snakemake.input.caches)), s["datasets"],
                                   train_datasets=s["train_datasets"], model=model, kinds=s["probes"],
                                   lr_settings=s["lr_probe"], mm_settings=s["mm_probe"], log=log.info)
table.insert(0, "model", model)
io.write_table(table, snakemake.output.table)
with io.atomic_path(snakemake.output.probes) as tmp:
    probes.save(tmp)
