"""Concatenate the organism models' behaviour checks into one tidy table."""

from ptmech.warm import handoff

handoff()  # with warm starts on, the rest of this script runs in a warm child (ptmech.warm)

import pandas as pd

from ptmech import io, logs

log = logs.to_file(snakemake.log[0])
table = pd.concat([pd.read_csv(p, sep="\t") for p in snakemake.input.checks], ignore_index=True)
io.write_table(table[["model", "metric", "value", "n"]], snakemake.output.tsv)
log.info("\n%s", table.pivot(index="metric", columns="model", values="value").round(3).to_string())
