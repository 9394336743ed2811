"""Tidy tables over all models: refusal scores, candidate selection scores, direction cosines
(ptmech.refusal.tables)."""

from ptmech.warm import handoff

handoff()  # with warm starts on, the rest of this script runs in a warm child (ptmech.warm)

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ptmech import io, logs, premises
from ptmech.refusal import candidates as rf, tables

log = logs.to_file(snakemake.log[0])
inp, out, p = snakemake.input, snakemake.output, snakemake.params


def model_of(path):
    return Path(path).parent.name


metas = {model_of(f): json.loads(Path(f).read_text()) for f in inp.metas}
directions = {}
for f in inp.directions:
    with np.load(f) as d:
        directions[model_of(f)] = d["direction"]
candidates = {model_of(f): rf.Candidates.load(f) for f in inp.candidates}

scores = tables.scores_table([pd.read_csv(f, sep="\t") for f in [*inp.baselines, *inp.steering]], p.models,
                             p.pairs, directions, metas, p.premises["refusal_min_baseline"])
for reason in sorted(set(scores[premises.COLUMN]) - {""}):
    log.warning("premise not met: %s", reason)
io.write_table(scores, out.scores)
log.info("refusal scores:\n%s", scores.to_string(index=False))

selection = tables.selection_table({model_of(f): pd.read_csv(f, sep="\t") for f in inp.selections}, metas)
io.write_table(selection, out.selection)

cosine = tables.cosine_table([tuple(q) for q in p.unordered], p.models, candidates, directions, metas)
if cosine.empty:
    log.warning("no direction cosines: no family has two models")
io.write_table(cosine, out.cosine)
