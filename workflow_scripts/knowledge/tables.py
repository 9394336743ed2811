import pandas as pd

from ptmech import io, logs, premises
from ptmech.knowledge import heatmaps, patching

log = logs.to_file(snakemake.log[0])
bins = snakemake.params.settings["bins"]
min_t = snakemake.params.premises["knowledge_min_t"]
maps, baselines = [], []
for path in snakemake.input.patching:
    r = patching.read_patching(path)
    a = r["attrs"]
    key = {"family": a["family"], "dataset": a["dataset"], "source": a["source"], "target": a["target"],
           "direction": a["direction"], "query": a.get("query", "question"), "n_pairs": int(a["n_pairs"])}
    maps.append(heatmaps.tidy_heatmap(r["ld"], a["columns"], bins).assign(**key))
    tt, tf = r["target_true_ld"], r["target_false_ld"]
    # premise: the clean true / false gap of both models stands out from its noise
    t = {"target": premises.gap_t(tt, tf), "source": premises.gap_t(r["source_true_ld"], r["source_false_ld"])}
    sides = ["target"] + (["source"] if a["source"] != a["target"] else [])
    premise = premises.joined(f"{who}: {why}" for who in sides if (why := premises.logit_gap(t[who], min_t)))
    if premise:
        log.warning("%s -> %s / %s: premise not met: %s", a["source"], a["target"], a["dataset"], premise)
    maps[-1][premises.COLUMN] = premise
    baselines.append({
        **key,
        "source_true_ld": float(r["source_true_ld"].mean()),
        "source_false_ld": float(r["source_false_ld"].mean()),
        "target_true_ld": float(tt.mean()),
        "target_false_ld": float(tf.mean()),
        "target_accuracy": float(((tt > 0).sum() + (tf < 0).sum()) / (2 * len(tt))),
        "patched_last_cell_ld": float(r["ld"][:, -1, -1].mean()),
        "min_mean_ld": float(r["ld"].mean(axis=0).min()),
        "max_mean_ld": float(r["ld"].mean(axis=0).max()),
        "target_gap_t": t["target"],
        "source_gap_t": t["source"],
        premises.COLUMN: premise,
    })
    log.info("%s -> %s / %s: %d pairs", a["source"], a["target"], a["dataset"], key["n_pairs"])
key_cols = ["family", "dataset", "source", "target", "direction", "query", "n_pairs"]
table = pd.concat(maps, ignore_index=True)
table = table[key_cols + [c for c in table.columns if c not in key_cols]]
io.write_table(table, snakemake.output.heatmaps)
io.write_table(pd.DataFrame(baselines), snakemake.output.baselines)
differences = heatmaps.difference_table(table, snakemake.params.models)
io.write_table(differences, snakemake.output.differences)
log.info("%d heatmaps, %d difference statistics", len(maps), len(differences))
lone = sorted(f for f, rows in table.groupby("family") if rows["target"].nunique() < 2)
if lone:
    log.warning("no difference statistics for famil%s %s: one model each, so no comparison between two models",
                "y" if len(lone) == 1 else "ies", ", ".join(lone))
