from ptmech.warm import handoff

handoff()  # with warm starts on, the rest of this script runs in a warm child (ptmech.warm)

import json

from transformers import AutoTokenizer

from ptmech import data, logs
from ptmech.adapter import prepare_tokenizer
from ptmech.io import atomic_path
from ptmech.knowledge import pairs as statement_pairs

log = logs.to_file(snakemake.log[0])
w, p = snakemake.wildcards, snakemake.params
settings, tok_spec = p.settings, p.tokenizer
tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(tok_spec["path"], revision=tok_spec.get("revision")))
table = data.load_table(snakemake.input.data)
doc = statement_pairs.build_pairs(
    tokenizer, table["statement"].tolist(), table["label"].tolist(), w.dataset, settings["skeletons"],
    query_mode=settings["query"], pair_by=settings["pair_by"], reuse_unique_false=settings["reuse_unique_false"], max_pairs=settings["max_pairs"],
    n_true_demos=settings["n_true_demos"], n_false_demos=settings["n_false_demos"], seed=settings["seed"],
)
doc = {**doc, "family": w.family, "tokenizer_model": tok_spec["model"], "settings": settings}
log.info("%s / %s (tokenizer of %s): %s; columns %s", w.family, w.dataset, tok_spec["model"], doc["counts"],
         [c["role"] for c in doc["columns"]])
with atomic_path(snakemake.output.json) as tmp:
    tmp.write_text(json.dumps(doc, indent=1, ensure_ascii=False))
