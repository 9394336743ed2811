"""Norm and LogitVar of every last-layer MLP neuron of one model, from its weights only."""

from ptmech.warm import handoff

handoff()  # with warm starts on, the rest of this script runs in a warm child (ptmech.warm)

from ptmech import adapter as ad, io, logs
from ptmech.confidence import neurons as cf

log = logs.to_file(snakemake.log[0])
w, p = snakemake.wildcards, snakemake.params
model = ad.load_model(w.model, p.model)
log.info("%s: last layer (block %d) has %d neurons, d_model %d, vocabulary %d; device %s, dtype %s",
         w.model, model.n_layers - 1, model.mlp_out_rows(-1).shape[0], model.d_model,
         model.unembed_weight.shape[0], model.device, model.dtype)
stats = cf.model_neuron_statistics(model, chunk_size=p.settings["chunk_size"])
stats.insert(0, "block", model.n_layers - 1)  # the decoder block whose MLP holds the neurons (it writes k = L)
io.write_table(stats, snakemake.output.tsv)
log.info("wrote %d neurons: norm %.4g..%.4g, LogitVar %.4g..%.4g", len(stats), stats["norm"].min(),
         stats["norm"].max(), stats["logit_var"].min(), stats["logit_var"].max())
