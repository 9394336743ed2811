"""Entropy and loss change under mean ablation of each entropy neuron, a family's models
side by side."""

from ptmech.warm import handoff

handoff()  # with warm starts on, the rest of this script runs in a warm child (ptmech.warm)

import pandas as pd

from ptmech import figures, logs
from ptmech.confidence import figures as plots

log = logs.to_file(snakemake.log[0])
models = snakemake.params.models
effects = pd.concat([pd.read_csv(snakemake.input[m], sep="\t").assign(model=m) for m in models],
                    ignore_index=True)
fig = plots.ablation_bars(effects, models)
figures.save(fig, snakemake.output.png)
