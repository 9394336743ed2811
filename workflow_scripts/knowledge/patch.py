from ptmech.warm import handoff

handoff()  # with warm starts on, the rest of this script runs in a warm child (ptmech.warm)

import json
import time

import numpy as np

from ptmech import adapter as ad, logs
from ptmech.knowledge import pairs as statement_pairs, patching

log = logs.to_file(snakemake.log[0])
w, p = snakemake.wildcards, snakemake.params
settings = p.settings
doc = json.loads(open(snakemake.input.pairs).read())
pairs = doc["pairs"]
target = ad.load_model(w.target, p.model, device=settings["device"])
question = doc["query"] == "question"
answers = patching.answer_ids(target.tokenizer, settings["multi_token_answers"]) if question else None
statement_pairs.check_tokenization(target.tokenizer, doc, w.target)
expect = {
    "family": p.model["family"],
    "dataset": w.dataset,
    "query": doc["query"],
    "prompt_tokens_sha256": statement_pairs.prompt_tokens_sha256(pairs, answers or ()),
    "n_layers": target.n_layers,
    "d_model": target.d_model,
}
start = time.perf_counter()
with patching.Sources(snakemake.input.sources, expect=expect, what=f" (patching {w.source} into {w.target})") as src:
    log.info("%s -> %s / %s (%s, %s queries): %d pairs, %d positions x %d blocks, batch %d, device %s", w.source,
             w.target, w.dataset, settings["direction"], doc["query"], len(pairs), len(doc["columns"]),
             target.n_layers, settings["batch_size"], target.device)
    if not question:  # the source's answer on the true prompt vs the target's on the false one
        false_top = patching.top_tokens(target, [x["false_ids"] for x in pairs], settings["batch_size"])
        answers = patching.completion_answers(src.true_top, false_top)
        same = sum(a == b for a, b in answers)
        if same:
            log.warning("%d of %d pairs have the same answer on both prompts (their LD is 0 everywhere)", same, len(pairs))
    ld = patching.patch_pairs(target, pairs, src.true_resid, answers, batch_size=settings["batch_size"],
                              reuse_clean_run=settings["reuse_clean_run"], log=log.info)
    source_true, source_false = src.true_ld, src.false_ld
arrays = {
    "target_true_ld": patching.clean_logit_diffs(target, [x["true_ids"] for x in pairs], answers, settings["batch_size"]),
    "target_false_ld": patching.clean_logit_diffs(target, [x["false_ids"] for x in pairs], answers, settings["batch_size"]),
    "source_true_ld": source_true,
    "source_false_ld": source_false,
    "true_row": np.array([x["true_row"] for x in pairs]),
    "false_row": np.array([x["false_row"] for x in pairs]),
}
patching.write_patching(snakemake.output.h5, ld, arrays, {
    "source": w.source, "target": w.target, "dataset": w.dataset, "family": p.model["family"],
    "direction": settings["direction"], "query": doc["query"], "columns": doc["columns"], "positions": doc["positions"],
    "n_pairs": len(pairs), "seconds": time.perf_counter() - start,
})
log.info("mean LD: clean false %.3f, clean true %.3f (target), last block & token patched %.3f",
         arrays["target_false_ld"].mean(), arrays["target_true_ld"].mean(), ld[:, -1, -1].mean())
