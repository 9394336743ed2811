"""Tidy truth tables over all models and pairs."""

import json

import pandas as pd

from ptmech import io, logs

log = logs.to_file(snakemake.log[0])
inp, models = snakemake.input, snakemake.params.models
relation = {(p["source"], p["target"]): p["direction"] for p in snakemake.params.pairs}

layers = pd.DataFrame([json.loads(open(f).read()) for f in inp.layers]).drop(columns=["scores", "layer_convention"])
layers["steer_blocks"] = layers["steer_blocks"].map(lambda b: ",".join(map(str, b)))
probe_k = dict(zip(layers["family"], layers["probe_k"]))


def read(files, columns):
    if not files:
        return pd.DataFrame(columns=columns)
    return pd.concat([pd.read_csv(f, sep="\t") for f in files], ignore_index=True)


def annotate(table, model_col):
    """Add the family after ``model_col`` and whether the row is at the family's probe layer."""
    family = table[model_col].map(lambda m: models[m]["family"])
    table.insert(table.columns.get_loc(model_col) + 1, "family", family)
    table["at_probe_layer"] = table["k"] == family.map(probe_k)
    return table


accuracy = annotate(read(inp.probes, ["model", "probe", "heldout", "k", "layer", "accuracy", "n"]), "model")
accuracy.insert(2, "role", accuracy["model"].map(lambda m: models[m]["role"]))
io.write_table(accuracy, snakemake.output.accuracy)
io.write_table(layers, snakemake.output.layers)

pair_cols = ["source", "target", "probe", "heldout", "k", "layer"]
transfer = annotate(read(inp.transfer, pair_cols + ["probe_model", "eval_model", "accuracy", "n"]), "target")
# forward = a base model's probe on a post-trained model's activations, backward the reverse
transfer.insert(transfer.columns.get_loc("eval_model") + 1, "direction",
                [("native" if a == b else relation[(a, b)]) for a, b in zip(transfer["probe_model"], transfer["eval_model"])])
io.write_table(transfer, snakemake.output.transfer)
cosine = annotate(read(inp.cosine, pair_cols + ["cosine"]), "target")
io.write_table(cosine, snakemake.output.cosine)
log.info("%d accuracy, %d transfer, %d cosine rows", len(accuracy), len(transfer), len(cosine))
