"""Norm vs LogitVar of one model's last-layer neurons, entropy neurons highlighted."""

from ptmech.warm import handoff

handoff()  # with warm starts on, the rest of this script runs in a warm child (ptmech.warm)

import pandas as pd

from ptmech import figures, logs, premises
from ptmech.confidence import figures as plots, selection as cf

log = logs.to_file(snakemake.log[0])
sel = snakemake.params.selection
p, n = sel["top_norm_fraction"], sel["n_neurons"]
stats = pd.read_csv(snakemake.input.neurons, sep="\t")
rows = cf.entropy_neurons(stats["norm"], stats["logit_var"], p, n)
chosen = stats["neuron"].to_numpy()[rows].tolist()
premise = premises.entropy_premise(stats["logit_var"].to_numpy(), rows, snakemake.params.premises["entropy_max_z"])
fig = plots.scatter(stats, chosen, p, title=f"{snakemake.wildcards.model}: last-layer neurons "
                                             f"(entropy neurons: top {p:g} by norm, {n} lowest LogitVar)")
figures.save(fig, snakemake.output.png, notes=[premise])
