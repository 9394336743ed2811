"""The trained organism against every floor, behaviour and analyses together: the base
model's best-layer truth probe and the instruct model's own refusal direction."""

from ptmech.warm import handoff

handoff()  # with warm starts on, the rest of this script runs in a warm child (ptmech.warm)

import json

import pandas as pd

from ptmech import io, logs
from ptmech.organism import floors

log = logs.to_file(snakemake.log[0])
inp = snakemake.input
checks = pd.read_csv(inp.checks, sep="\t")
metrics = floors.workflow_metrics(
    {m: t for m, t in checks.groupby("model")},
    truth_layers=json.loads(open(inp.truth_layers).read()) if "truth_layers" in inp.keys() else None,
    direction=json.loads(open(inp.direction).read()) if "direction" in inp.keys() else None,
    baseline=pd.read_csv(inp.baseline, sep="\t") if "baseline" in inp.keys() else None,
    steering=pd.read_csv(inp.steering, sep="\t") if "steering" in inp.keys() else None,
)
verdict = floors.evaluate(metrics, metric_names=floors.workflow_metric_names(set(inp.keys())))
log.info("floors:\n%s", verdict.to_string(index=False))
floors.enforce(verdict, snakemake.params.enforce, log.warning,
               hint="Set organism.checks.floors: false to keep this run's results anyway.")
io.write_table(verdict, snakemake.output.tsv)
