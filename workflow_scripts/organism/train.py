"""Train one stage of the organism (pretrain -> organism-base, sft, instruct) and save the
model like any hub model."""

from ptmech import io, logs
from ptmech.organism import train
from ptmech.organism.world import World

log = logs.to_file(snakemake.log[0])
p = snakemake.params
train.set_determinism(p.seed, p.threads)
world = World.from_json(snakemake.input.world)
source = snakemake.input.get("tokenizer") or snakemake.input.model
model, tokenizer, history = train.run_stage(p.stage, world, source, p.recipe, p.seed,
                                            model_cfg=p.get("model"))
train.save_model(model, tokenizer, snakemake.output.model,
                 {"stage": p.stage, "seed": p.seed, "threads": p.threads, "recipe": dict(p.recipe),
                  "model": dict(p.get("model") or {}), "world_seed": world.seed})
io.write_table(history, snakemake.output.history)
log.info("saved %s (%d parameters)", snakemake.output.model, train.n_parameters(model))
