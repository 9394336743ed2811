"""The ablation effects of all models in one tidy table."""

from ptmech.warm import handoff

handoff()  # with warm starts on, the rest of this script runs in a warm child (ptmech.warm)

import pandas as pd

from ptmech import io, logs

log = logs.to_file(snakemake.log[0])
models = snakemake.params.models
table = pd.concat([pd.read_csv(snakemake.input[m], sep="\t").assign(model=m, **models[m]) for m in models],
                  ignore_index=True)
first = ["model", "family", "role"]
io.write_table(table[first + [c for c in table.columns if c not in first]], snakemake.output.tsv)
