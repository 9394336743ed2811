"""Behaviour checks of one organism model (fact recall, few-shot TRUE / FALSE on held-out
statements, refusal rates), checked against its floors right after training: a model that
misses one fails the run here, before anything is analysed."""

from ptmech.warm import handoff

handoff()  # with warm starts on, the rest of this script runs in a warm child (ptmech.warm)

import json

import pandas as pd
import torch

from ptmech import io, logs
from ptmech.adapter import load_model
from ptmech.organism import checks, floors
from ptmech.organism.world import INSTRUCTION_DATASETS, STATEMENT_DATASETS, World

log = logs.to_file(snakemake.log[0])
settings = snakemake.params.checks
torch.set_num_threads(int(snakemake.params.threads))
name = snakemake.wildcards.organism
adapter = load_model(name, {"path": snakemake.input.model, "role": checks.ROLES[name], "device": "cpu",
                            "dtype": "float32"})
world = World.from_json(snakemake.input.world)
statements = {d: pd.read_csv(snakemake.input[d]) for d in STATEMENT_DATASETS}
instructions = {d: pd.read_csv(snakemake.input[d]) for d in INSTRUCTION_DATASETS}
few_shot = json.loads(open(snakemake.input.few_shot).read())
table = checks.behaviour_table(adapter, world, statements, instructions, few_shot,
                               max_new_tokens=int(settings["max_new_tokens"]))
table.insert(0, "model", name)
log.info("%s:\n%s", name, table.to_string(index=False))
verdict = floors.evaluate({name: floors.behaviour_metrics(table)}, metric_names=set(floors.BEHAVIOUR))
log.info("floors:\n%s", verdict.to_string(index=False))
floors.enforce(verdict, settings["floors"], log.warning,
               hint="Set organism.checks.floors: false to analyse this organism anyway.")
io.write_table(table, snakemake.output.tsv)
