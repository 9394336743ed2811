from ptmech.warm import handoff

handoff()  # with warm starts on, the rest of this script runs in a warm child (ptmech.warm)

import json

from ptmech import adapter as ad, logs
from ptmech.knowledge import pairs as statement_pairs, patching

log = logs.to_file(snakemake.log[0])
w, p = snakemake.wildcards, snakemake.params
settings = p.settings
doc = json.loads(open(snakemake.input.pairs).read())
model = ad.load_model(w.model, p.model, device=settings["device"])
question = doc["query"] == "question"
answers = patching.answer_ids(model.tokenizer, settings["multi_token_answers"]) if question else None
statement_pairs.check_tokenization(model.tokenizer, doc, w.model)
n_positions = len(doc["columns"])
log.info("%s / %s: %d pairs, %d positions x %d blocks, device %s, dtype %s", w.model, w.dataset,
         len(doc["pairs"]), n_positions, model.n_layers, model.device, model.dtype)
attrs = {
    "family": p.model["family"],
    "dataset": w.dataset,
    "query": doc["query"],
    "prompt_tokens_sha256": statement_pairs.prompt_tokens_sha256(doc["pairs"], answers or ()),
    "columns": doc["columns"],
    **ad.provenance(model, p.model),
}
patching.write_sources(model, doc["pairs"], snakemake.output.h5, n_positions=n_positions, answers=answers,
                       batch_size=settings["batch_size"], storage_dtype=settings["storage_dtype"], attrs=attrs,
                       log=log.info)
