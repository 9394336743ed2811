from ptmech.warm import handoff

handoff()  # with warm starts on, the rest of this script runs in a warm child (ptmech.warm)

from ptmech import data, logs
from ptmech.knowledge import heatmaps

log = logs.to_file(snakemake.log[0])
w, out = snakemake.wildcards, snakemake.output
table = data.load_table(snakemake.input.heatmaps)
table = table[(table.family == w.family) & (table.dataset == w.dataset)]
differences = data.load_table(snakemake.input.differences)
differences = differences[(differences.family == w.family) & (differences.dataset == w.dataset)]
present = set(table.source) | set(table.target)
models = [m for m in snakemake.params.models if m in present]
n = int(table.n_pairs.max())
query = "/".join(sorted(set(table["query"]))) if "query" in table else "question"
heatmaps.plot_heatmaps(table, models, "normalised", out.heatmaps,
                       f"{w.dataset} ({query} queries): patching true into false runs (binned normalisation), "
                       f"{n} pairs; row = source, column = target")
heatmaps.plot_heatmaps(table, models, "mean_ld", out.raw,
                       f"{w.dataset} ({query} queries): mean logit difference after patching, {n} pairs; "
                       "row = source, column = target")
heatmaps.plot_differences(table, differences, out.differences, f"{w.dataset}: differences of binned heatmaps")
log.info("%s / %s: figures of %d models", w.family, w.dataset, len(models))
