"""Norm vs LogitVar of one model's last-layer neurons, entropy neurons highlighted."""

import pandas as pd

from ptmech import confidence as cf, confidence_plots as plots, io, logs

log = logs.to_file(snakemake.log[0])
sel = snakemake.params.selection
p, n = sel["top_norm_fraction"], sel["n_neurons"]
stats = pd.read_csv(snakemake.input.neurons, sep="\t")
chosen = stats["neuron"].to_numpy()[cf.entropy_neurons(stats["norm"], stats["logit_var"], p, n)].tolist()
fig = plots.scatter(stats, chosen, p, title=f"{snakemake.wildcards.model}: last-layer neurons "
                                             f"(entropy neurons: top {p:g} by norm, {n} lowest LogitVar)")
with io.atomic_path(snakemake.output.png) as tmp:
    fig.savefig(tmp, dpi=150, format="png", bbox_inches="tight")
