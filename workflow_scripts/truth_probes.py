"""Leave-one-dataset-out truth probes of one model at every cached residual index."""

from ptmech import io, logs, truth

log = logs.to_file(snakemake.log[0])
s = snakemake.params.settings
model = snakemake.wildcards.model
caches = truth.open_caches(dict(zip(s["cache_datasets"], snakemake.input.caches)), model=model)
try:
    ks = truth.common_layers(caches)
    n_layers = int(next(iter(caches.values())).attrs["n_layers"])
    splits = truth.heldout_splits(s["datasets"], s["train_datasets"])
    log.info("%s: probes %s at k=%s, %d held-out datasets", model, s["probes"], ks, len(splits))
    table, probes = truth.probe_sweep(truth.centred_layers(caches, ks), truth.cache_labels(caches), splits,
                                      kinds=s["probes"], lr_settings=s["lr_probe"], n_layers=n_layers, log=log.info)
finally:
    for c in caches.values():
        c.close()
table.insert(0, "model", model)
io.write_table(truth.with_block_layer(table), snakemake.output.table)
with io.atomic_path(snakemake.output.probes) as tmp:
    probes.save(tmp)
