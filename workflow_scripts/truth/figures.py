"""Per-family and per-pair truth figures from the aggregate tables."""

from ptmech.warm import handoff

handoff()  # with warm starts on, the rest of this script runs in a warm child (ptmech.warm)

import pandas as pd

from ptmech import figures, logs
from ptmech.truth import figures as tf

log = logs.to_file(snakemake.log[0])
w, inp, kind, models = snakemake.wildcards, snakemake.input, snakemake.params.kind, snakemake.params.models
read = lambda f: pd.read_csv(f, sep="\t")
if kind == "steering":
    table = read(inp.steering)
    fig = tf.steering(table[table["family"] == w.family], f"truth steering, family {w.family}", models)
else:
    layers = read(inp.layers).set_index("family")
    if kind == "accuracy":
        table = read(inp.accuracy)
        fig = tf.accuracy(table[table["family"] == w.family], layers.loc[w.family, "probe_k"],
                          f"held-out truth-probe accuracy, family {w.family}", models)
    elif kind == "cosine":
        table = read(inp.cosine)
        fig = tf.cosine(table[table["family"] == w.family], layers.loc[w.family, "probe_k"],
                        f"truth-direction cosine, family {w.family}", models)
    elif kind == "transfer":
        table = read(inp.transfer)
        family = table.loc[(table["source"] == w.source) & (table["target"] == w.target), "family"].iloc[0]
        k = int(layers.loc[family, "probe_k"])
        fig = tf.transfer(table, w.source, w.target, k, f"probe transfer at k={k}")
    else:
        raise ValueError(f"unknown figure kind {kind!r}")
figures.save(fig, snakemake.output.figure)
log.info("%s figure written", kind)
