"""Greedy generations of one target model on the test prompts: unsteered (rule
refusal_baseline), or with a source model's refusal direction ablated at every layer on
harmful prompts and added at the target's layer on harmless prompts (rule refusal_steer)."""

from ptmech.warm import handoff

handoff()  # with warm starts on, the rest of this script runs in a warm child (ptmech.warm)

import json

import numpy as np
import pandas as pd

from ptmech import adapter as ad, data, io, logs
from ptmech.refusal import directions as rf

log = logs.to_file(snakemake.log[0])
w, s, inp, out = snakemake.wildcards, snakemake.params.settings, snakemake.input, snakemake.output
target, source = w.get("target", w.get("model")), w.get("source")  # steer: {source}/{target}; baseline: {model}
gen = s["generation"]

model = ad.load_model(target, snakemake.params.model, device=s["device"])
tokens = rf.refusal_token_ids(model.tokenizer, s["refusal_tokens"])
tests = {}
for name in ("harmful", "harmless"):
    table = data.load_table(inp[f"{name}_data"])
    rows, ids = rf.split_prompts(model, table, "test", s["n_test"], s["split_fractions"], s["split_seed"],
                                 what=f"{name} instructions")
    tests[name] = (rows, table["instruction"].iloc[rows].tolist(), ids)

if source is None:
    conditions = [(name, rf.Intervention("none")) for name in ("harmful", "harmless")]
else:
    with np.load(inp.source_direction) as f:
        r = f["direction"]
    own = json.loads(open(inp.target_direction).read())
    add = s["addition"]
    scale = own["direction_norm"] if add["units"] == "mean_difference" else 1.0
    coefficients = sorted({float(add["coefficient"]), *map(float, add["sweep"])})
    conditions = [("harmful", rf.Intervention("ablation", rf.unit(r)))]
    conditions += [("harmless", rf.Intervention("addition", rf.unit(r), k=own["k"], coefficient=c, scale=scale,
                                                sites=tuple(add["sites"]))) for c in coefficients]
    log.info("%s with %s's direction: ablation at every layer; addition at k=%d (%s) of c x %.4g x r, c in %s",
             target, source, own["k"], "+".join(add["sites"]), scale, coefficients)

generations, scores = [], []
for name, iv in conditions:
    rows, instructions, ids = tests[name]
    log.info("%s: %s on %d %s test prompts", target, iv.operation, len(ids), name)
    frame = rf.steer(model, ids, iv, refusal_tokens=tokens, prefixes=s["prefixes"],
                     max_new_tokens=gen["max_new_tokens"], batch_size=s["batch_size"], log=log.info)
    label = {
        "target": target, "source": source or "", "operation": iv.operation, "instructions": name,
        "coefficient": iv.coefficient if iv.operation == "addition" else np.nan,
        "k": iv.k if iv.operation == "addition" else np.nan,
    }
    frame.insert(0, "instruction", instructions)
    frame.insert(0, "row", rows)
    generations.append(frame.assign(**label))
    scores.append({**label, "default_coefficient": iv.operation != "addition"
                   or iv.coefficient == float(s["addition"]["coefficient"]),
                   "n": len(frame), "refusal_score": frame["refused"].mean(),
                   "refusal_logit_score": frame["refusal_logit_score"].mean()})
    log.info("refusal score %.3f; e.g. %r", scores[-1]["refusal_score"], frame["generation"].iloc[0])

gens = pd.concat(generations, ignore_index=True).astype({"k": "Int64"})
cols = ["target", "source", "operation", "instructions", "coefficient", "k", "row", "instruction",
        "generation", "refused", "refusal_logit_score"]
with io.atomic_path(out.generations) as tmp:
    gens[cols].to_json(tmp, orient="records", lines=True, force_ascii=False)
scores = pd.DataFrame(scores).astype({"k": "Int64"})
io.write_table(scores, out.scores)
