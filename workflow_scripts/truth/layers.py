"""The family's probe layer and steering layers, with the scores that chose them."""

from ptmech.warm import handoff

handoff()  # with warm starts on, the rest of this script runs in a warm child (ptmech.warm)

import json

import pandas as pd

from ptmech import io, logs
from ptmech.truth import probes as truth

log = logs.to_file(snakemake.log[0])
s = snakemake.params.settings
n_layers = truth.ProbeSet.load(snakemake.input.probes).n_layers
choice = truth.choose_layers(pd.read_csv(snakemake.input.table, sep="\t"), n_layers, probe=s["probe"],
                             probe_k=s["probe_k"], intervene_k=s["intervene_k"],
                             intervene_fraction=s["intervene_fraction"])
choice = {"family": s["family"], "model": s["model"], **choice}
log.info("%s: probe k=%d (%s, mean held-out accuracy %.3f); steering adds at k %s",
         s["family"], choice["probe_k"], choice["probe_source"], choice["probe_accuracy"], choice["steer_k"])
with io.atomic_path(snakemake.output.json) as tmp:
    tmp.write_text(json.dumps(choice, indent=1))
