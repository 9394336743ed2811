"""Mean-ablate one model's entropy neurons (and random control neurons) on the text set:
change in next-token entropy and loss, total and direct effect."""

from ptmech.warm import handoff

handoff()  # with warm starts on, the rest of this script runs in a warm child (ptmech.warm)

from pathlib import Path

import pandas as pd

from ptmech import adapter as ad, data, io, logs
from ptmech.confidence import neurons as cf

log = logs.to_file(snakemake.log[0])
w, p = snakemake.wildcards, snakemake.params
s, sel = p.settings, p.selection
stats = pd.read_csv(snakemake.input.neurons, sep="\t")
targets = cf.ablation_neurons(stats, sel["top_norm_fraction"], sel["n_neurons"], mode=s["neurons"],
                              n_random=s["n_random"], seed=s["seed"])

texts = []
for path in snakemake.input.data:
    table = data.load_table(path)
    column = "statement" if "statement" in table.columns else "instruction"
    rows = cf.spread_rows(len(table), s["max_texts"])
    texts += table[column].iloc[rows].tolist()
    log.info("%s: %d of %d texts", Path(path).stem, len(rows), len(table))
for path in snakemake.input.text_files:
    lines = [x for x in Path(path).read_text().splitlines() if x.strip()]
    rows = cf.spread_rows(len(lines), s["max_texts"])
    texts += [lines[i] for i in rows]
    log.info("%s: %d of %d texts", path, len(rows), len(lines))

model = ad.load_model(w.model, p.model)
ids = cf.text_token_ids(model, texts, s["max_tokens"])
log.info("%s: %d texts, %d tokens; ablating %d neurons (%s); device %s, dtype %s", w.model, len(ids),
         sum(map(len, ids)), len(targets), targets["group"].value_counts().to_dict(), model.device, model.dtype)
means = cf.mean_activations(model, ids, batch_size=s["batch_size"])
effects = cf.ablation_effects(model, ids, targets["neuron"].tolist(), means, batch_size=s["batch_size"],
                              log=log.info)
effects = targets.merge(effects, on="neuron").merge(stats[["neuron", "norm", "logit_var"]], on="neuron")
effects.insert(0, "block", model.n_layers - 1)  # the decoder block whose MLP holds the neurons (it writes k = L)
io.write_table(effects, snakemake.output.tsv)
