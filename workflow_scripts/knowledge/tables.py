"""Heatmap cells, clean baselines and model differences over every patching result
(ptmech.knowledge.tables)."""

from ptmech.warm import handoff

handoff()  # with warm starts on, the rest of this script runs in a warm child (ptmech.warm)

from ptmech import io, logs, premises
from ptmech.knowledge import tables
from ptmech.knowledge.results import read_patching

log = logs.to_file(snakemake.log[0])
p = snakemake.params
results = [read_patching(path) for path in snakemake.input.patching]
out = tables.patching_tables(results, p.models, p.settings["bins"], p.premises["knowledge_min_t"])
for row in out["baselines"].itertuples():
    log.info("%s -> %s / %s: %d pairs", row.source, row.target, row.dataset, row.n_pairs)
    if getattr(row, premises.COLUMN):
        log.warning("%s -> %s / %s: premise not met: %s", row.source, row.target, row.dataset,
                    getattr(row, premises.COLUMN))
for name in ("heatmaps", "baselines", "differences"):
    io.write_table(out[name], getattr(snakemake.output, name))
log.info("%d heatmaps, %d difference statistics", len(results), len(out["differences"]))
lone = tables.lone_families(out["heatmaps"])
if lone:
    log.warning("no difference statistics for famil%s %s: one model each, so no comparison between two models",
                "y" if len(lone) == 1 else "ies", ", ".join(lone))
