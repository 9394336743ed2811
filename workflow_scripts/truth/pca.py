"""Figure 1(b): both models' true and false statements in one PCA plane at the probe
layer, with both models' truth directions (trained without this dataset)."""

from ptmech.warm import handoff

handoff()  # with warm starts on, the rest of this script runs in a warm child (ptmech.warm)

import json

from ptmech import figures, io, logs
from ptmech.truth import figures as truth_figures, probes as truth

log = logs.to_file(snakemake.log[0])
w, s, inp = snakemake.wildcards, snakemake.params.settings, snakemake.input
layers = json.loads(open(inp.layers).read())
k = layers["probe_k"]
acts, labels, directions = {}, {}, {}
for model, cache_file, probes_file in ((w.source, inp.source_cache, inp.source_probes),
                                       (w.target, inp.target_cache, inp.target_probes)):
    caches = truth.open_caches({s["dataset"]: cache_file}, model=model)
    with caches[s["dataset"]] as c:
        acts[model], labels[model] = c.resid(k, -1), c.label("label")
    directions[model] = truth.ProbeSet.load(probes_file).probe(s["probe"], s["dataset"], k).direction
table, explained = truth.pca_table(acts, labels, directions)
table.insert(0, "k", k)
io.write_table(table, snakemake.output.table)
log.info("PCA of %s at k=%d: explained variance %s, cosine of the directions %.3f", s["dataset"], k,
         explained.round(3).tolist(), truth.cosine(*directions.values()))
fig = truth_figures.pca(table, title=f"{s['dataset']}, k={k}", models=snakemake.params.models,
                        explained=explained, cos=truth.cosine(*directions.values()))
figures.save(fig, snakemake.output.figure)
