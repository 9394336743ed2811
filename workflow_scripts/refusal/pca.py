"""Figure 1(c): one model's harmful and harmless test prompts in the PCA plane of its
residual stream at its refusal cell, with the refusal direction of every family member."""

from ptmech.warm import handoff

handoff()  # with warm starts on, the rest of this script runs in a warm child (ptmech.warm)

import json
from pathlib import Path

import numpy as np

from ptmech import data, figures, logs, premises
from ptmech.cache import Cache
from ptmech.refusal import candidates as rf, figures as refusal_plots

log = logs.to_file(snakemake.log[0])
w, s, inp = snakemake.wildcards, snakemake.params.settings, snakemake.input
meta = json.loads(Path(inp.meta).read_text())
k, position = meta["k"], meta["position"]
acts = {}
for name in ("harmful", "harmless"):
    table = data.load_table(inp[f"{name}_data"])
    rows = rf.split_rows(data.instruction_splits(table, s["split_fractions"], s["split_seed"]), "test", s["n_test"],
                         what=f"{name} instructions")
    with Cache(inp[f"{name}_cache"]) as cache:
        acts[name] = cache.resid(k, position)[rows]
directions = {}
for f in inp.directions:
    with np.load(f) as d:
        directions[Path(f).parent.name] = d["direction"]
own = directions[w.model]
labels = {m: (m if m == w.model else f"{m} (cos {rf.cosine(r, own):.2f})") for m, r in directions.items()}
fig = refusal_plots.pca_figure(acts["harmful"], acts["harmless"], directions, snakemake.params.models, labels,
                               title=f"{w.model}: residual at k={k}, position {position} (test prompts)")
why = premises.refusal_direction(meta["rule"])
figures.save(fig, snakemake.output.figure, notes=[why and f"{w.model}: {why}"])
log.info("PCA of %s at k=%d, position %d: %d harmful, %d harmless", w.model, k, position,
         len(acts["harmful"]), len(acts["harmless"]))
