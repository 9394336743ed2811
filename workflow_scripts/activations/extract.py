from ptmech.warm import handoff

handoff()  # with warm starts on, the rest of this script runs in a warm child (ptmech.warm)

import numpy as np
import torch

from ptmech import adapter as ad, cache, data, logs, prompts

log = logs.to_file(snakemake.log[0])
w, p = snakemake.wildcards, snakemake.params
settings = p.settings
model = ad.load_model(w.model, p.model, device=settings.get("device", "auto"))
table = data.load_table(snakemake.input.data)
texts = prompts.render(model, table, p.prompt_set)
positions = prompts.positions(model, p.prompt_set["positions"])
layers = p.prompt_set.get("layers", "all")
log.info("%s / %s / %s: %d prompts, positions %s, device %s, dtype %s, torch threads: %d",
         w.model, w.prompt_set, w.dataset, len(texts), positions, model.device, model.dtype, torch.get_num_threads())
labels = {c: table[c].to_numpy() for c in ("label",) if c in table.columns}
attrs = {
    "prompt_set": w.prompt_set,
    "dataset": w.dataset,
    "template": model.instruction_template() if p.prompt_set["kind"] == "instructions"
    else p.prompt_set.get("template", "{statement}"),
    **ad.provenance(model, p.model),
}
cache.extract(
    model, texts, snakemake.output.h5,
    positions=positions,
    layers=None if layers == "all" else layers,
    batch_size=settings.get("batch_size", 32),
    storage_dtype=settings.get("storage_dtype", "float16"),
    labels=labels,
    rows=np.arange(len(texts)),
    attrs=attrs,
    log=log.info,
)
