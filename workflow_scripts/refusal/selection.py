"""The model's refusal direction: the configured cell, else Arditi et al.'s search."""

from ptmech.warm import handoff

handoff()  # with warm starts on, the rest of this script runs in a warm child (ptmech.warm)

import json

import numpy as np

from ptmech import adapter as ad, data, io, logs
from ptmech.refusal import directions as rf


def json_safe(value):
    """NaN (a score not computed) as JSON null."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


log = logs.to_file(snakemake.log[0])
w, s, inp, out = snakemake.wildcards, snakemake.params.settings, snakemake.input, snakemake.output
sel, add = s["selection"], s["addition"]
candidates = rf.Candidates.load(inp.candidates)
with np.load(inp.candidates) as f:
    n_train = {"harmful": int(f["n_harmful"]), "harmless": int(f["n_harmless"])}
meta = {
    "model": w.model,
    "layer_convention": ad.LAYER_CONVENTION + "; refusal direction read at the input of block k",
    "n_train": n_train,
    "cached_k": candidates.k,
    "cached_positions": candidates.positions,
}

if s["k"] is not None and s["position"] is not None:
    k, position = int(s["k"]), int(s["position"])
    candidates.direction(k, position)  # fails clearly if the cell is not cached
    how, rule = "configured", "models.<m>.layers.refusal and refusal.models.<m>.position"
    frame = None
    log.info("%s: configured refusal cell k=%d, position %d (no search)", w.model, k, position)
else:
    model = ad.load_model(w.model, snakemake.params.model, device=s["device"])
    ids = {}
    for name in ("harmful", "harmless"):
        _, ids[name] = rf.split_prompts(model, data.load_table(inp[f"{name}_data"]), "val", s["n_val"],
                                        s["split_fractions"], s["split_seed"], what=f"{name} instructions")
    tokens = rf.refusal_token_ids(model.tokenizer, s["refusal_tokens"])
    log.info("%s: refusal tokens %s", w.model, [model.tokenizer.decode([t]) for t in tokens])
    frame, rule = rf.search_direction(
        model, candidates, ids["harmful"], ids["harmless"], selection=sel, addition=add, refusal_tokens=tokens,
        prefixes=s["prefixes"], k=s["k"], position=s["position"], batch_size=s["batch_size"], log=log.info,
    )
    chosen = frame[frame["selected"]].iloc[0]
    k, position, how = int(chosen["k"]), int(chosen["position"]), "automatic"
    meta.update({
        "scores": {c: float(chosen[c]) for c in ("ablation_refusal_score", "addition_refusal_score", "ablation_kl",
                                                 "ablation_refusal_rate", "addition_refusal_rate")},
        "baseline": dict(frame.attrs),
        "n_val": {name: len(x) for name, x in ids.items()},
        "n_candidates": len(frame), "n_passing": int((frame["discarded"] == "").sum()),
        "selection": sel, "addition": add,
        "refusal_tokens": [model.tokenizer.decode([t]) for t in tokens],
    })
    if rule.startswith("fallback"):
        log.warning("%s: %s", w.model, rule)
    log.info("%s: chose k=%d, position %d (%s)\n%s", w.model, k, position, rule, frame.to_string(index=False))

diff = candidates.direction(k, position)
norm = float(np.linalg.norm(diff))
if not norm > 0:
    raise ValueError(f"{w.model}: the mean difference at k={k}, position {position} is zero (a template token "
                     f"before any block?); choose another refusal cell")
meta.update({"k": k, "position": position, "how": how, "rule": rule, "direction_norm": norm})
if frame is None:
    frame = rf.configured_selection(k, position, norm)
with io.atomic_path(out.direction) as tmp, open(tmp, "wb") as f:
    np.savez(f, direction=diff / norm, mean_diff=diff, k=k, position=position)
io.write_table(frame, out.selection)
with io.atomic_path(out.meta) as tmp:
    tmp.write_text(json.dumps(json_safe(meta), indent=1))
