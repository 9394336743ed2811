"""The refusal stage's per-family figures: refusal scores, or direction cosines per layer."""

from ptmech.warm import handoff

handoff()  # with warm starts on, the rest of this script runs in a warm child (ptmech.warm)

import pandas as pd

from ptmech import figures, logs
from ptmech.refusal import figures as refusal_plots

log = logs.to_file(snakemake.log[0])
family, kind = snakemake.wildcards.family, snakemake.params.kind
table = pd.read_csv(snakemake.input.table, sep="\t")
table = table[table["family"] == family]
if kind == "scores":
    fig = refusal_plots.scores_figure(table, snakemake.params.models, title=f"{family}: refusal scores on held-out test prompts")
else:
    fig = refusal_plots.cosine_figure(table, snakemake.params.models, title=f"{family}: cosine between refusal directions")
figures.save(fig, snakemake.output.figure, notes=figures.table_notes(table, ["source", "target"]))
log.info("%s figure of family %s: %d rows", kind, family, len(table))
