"""Tidy tables over all models: refusal scores, candidate selection scores, direction cosines."""

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ptmech import io, logs, premises
from ptmech.refusal import directions as rf

log = logs.to_file(snakemake.log[0])
inp, out, p = snakemake.input, snakemake.output, snakemake.params
models, pairs = p.models, p.pairs


def model_of(path):
    return Path(path).parent.name


metas = {model_of(f): json.loads(Path(f).read_text()) for f in inp.metas}
directions = {}
for f in inp.directions:
    with np.load(f) as d:
        directions[model_of(f)] = d["direction"]
candidates = {model_of(f): rf.Candidates.load(f) for f in inp.candidates}
labels = {(q["source"], q["target"]): q["direction"] for q in pairs}

scores = pd.concat([pd.read_csv(f, sep="\t") for f in [*inp.baselines, *inp.steering]], ignore_index=True)
scores["source"] = scores["source"].fillna("")
scores["family"] = scores["target"].map(lambda m: models[m]["family"])
scores["target_role"] = scores["target"].map(lambda m: models[m]["role"])
scores["source_role"] = scores["source"].map(lambda m: models[m]["role"] if m else "")
scores["direction"] = [
    "baseline" if op == "none" else "native" if src == tgt else labels.get((src, tgt), "lateral")
    for op, src, tgt in zip(scores["operation"], scores["source"], scores["target"])
]
scores["cosine_to_native"] = [
    rf.cosine(directions[src], directions[tgt]) if src else np.nan
    for src, tgt in zip(scores["source"], scores["target"])
]
# premises: the direction passed the selection filters; the target refuses before ablation
floor = p.premises["refusal_min_baseline"]
unsteered = scores[(scores["operation"] == "none") & (scores["instructions"] == "harmful")]
baseline_rate = dict(zip(unsteered["target"], unsteered["refusal_score"]))
scores[premises.COLUMN] = [
    premises.joined([premises.refusal_direction(metas[src]["rule"]) if src else "",
                     premises.refusal_baseline(baseline_rate.get(tgt, float("nan")), floor) if op == "ablation" else ""])
    for op, src, tgt in zip(scores["operation"], scores["source"], scores["target"])
]
for reason in sorted(set(scores[premises.COLUMN]) - {""}):
    log.warning("premise not met: %s", reason)
scores = scores.sort_values(["family", "target", "instructions", "operation", "direction", "source", "coefficient"])
io.write_table(scores, out.scores)
log.info("refusal scores:\n%s", scores.to_string(index=False))

selection = []
for f in inp.selections:
    m = model_of(f)
    frame = pd.read_csv(f, sep="\t")
    frame["discarded"] = frame["discarded"].fillna("")
    frame.insert(0, "how", metas[m]["how"])
    frame[premises.COLUMN] = premises.refusal_direction(metas[m]["rule"])
    frame.insert(0, "model", m)
    selection.append(frame)
io.write_table(pd.concat(selection, ignore_index=True), out.selection)

cosine, seen = [], set()
for q in pairs:
    a, b = q["source"], q["target"]
    if frozenset((a, b)) in seen:
        continue
    seen.add(frozenset((a, b)))
    if models[b]["role"] == "base" and models[a]["role"] != "base":
        a, b = b, a
    frame = rf.direction_cosines(candidates[a], candidates[b], metas[a]["position"], metas[b]["position"])
    cosine.append(frame.assign(
        family=models[a]["family"], model_a=a, model_b=b,
        position_a=metas[a]["position"], position_b=metas[b]["position"],
        k_selected_a=metas[a]["k"], k_selected_b=metas[b]["k"],
        cosine_selected=rf.cosine(directions[a], directions[b]),
    ))
cols = ["family", "model_a", "model_b", "k", "position_a", "position_b", "cosine",
        "k_selected_a", "k_selected_b", "cosine_selected"]
io.write_table(pd.concat(cosine, ignore_index=True)[cols] if cosine else pd.DataFrame(columns=cols), out.cosine)
