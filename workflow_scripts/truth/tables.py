"""Tidy truth tables over all models and pairs (ptmech.truth.tables)."""

from ptmech.warm import handoff

handoff()  # with warm starts on, the rest of this script runs in a warm child (ptmech.warm)

import json

import pandas as pd

from ptmech import io, logs
from ptmech.truth import tables

log = logs.to_file(snakemake.log[0])
inp, out, p = snakemake.input, snakemake.output, snakemake.params


def read(files):
    return [pd.read_csv(f, sep="\t") for f in files]


layers = tables.layers_table([json.loads(open(f).read()) for f in inp.layers])
accuracy = tables.accuracy_table(read(inp.probes), p.models, layers)
transfer = tables.transfer_table(read(inp.transfer), p.models, layers, p.pairs)
cosine = tables.cosine_table(read(inp.cosine), p.models, layers)
for table, path in ((accuracy, out.accuracy), (layers, out.layers), (transfer, out.transfer), (cosine, out.cosine)):
    io.write_table(table, path)
log.info("%d accuracy, %d transfer, %d cosine rows", len(accuracy), len(transfer), len(cosine))
if transfer.empty:
    log.warning("no probe transfer or cosine rows: no family has two models")
