"""The steering scores of every (direction source, target model, dataset)."""

from ptmech.warm import handoff

handoff()  # with warm starts on, the rest of this script runs in a warm child (ptmech.warm)

import json

import pandas as pd

from ptmech import io, logs
from ptmech.truth.tables import steering_scores

log = logs.to_file(snakemake.log[0])
models = snakemake.params.models
direction = {(p["source"], p["target"]): p["direction"] for p in snakemake.params.pairs}
parts = []
for table_file, summary_file in zip(snakemake.input.tables, snakemake.input.summaries):
    summary = json.loads(open(summary_file).read())
    per = pd.read_csv(table_file, sep="\t")
    scores = steering_scores(per["label"], per["p_diff_base"], per["p_diff_steered"])
    source, target = summary["source"], summary["target"]
    meta = {
        "source": source, "target": target, "family": models[target]["family"],
        "direction": "native" if source == target else direction[(source, target)],
        "dataset": summary["dataset"], "probe": summary["probe"], "probe_k": summary["probe_k"],
        "steer_k": ",".join(map(str, summary["steer_k"])),
        "coefficient": summary["coefficient"],
    }
    for key, value in reversed(meta.items()):
        scores.insert(0, key, value)
    parts.append(scores)
table = pd.concat(parts, ignore_index=True)
io.write_table(table, snakemake.output.table)
log.info("\n%s", table[table["subset"] == "average"].to_string(index=False))
