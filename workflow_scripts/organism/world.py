"""Sample the organism's world; write its datasets (paper CSV formats), few-shot demos and
tokenizer."""

import json

from ptmech import io, logs
from ptmech.organism import world as W
from ptmech.organism.tokenizer import build_tokenizer

log = logs.to_file(snakemake.log[0])
world = W.build_world(snakemake.params.seed, **snakemake.params.world)
with io.atomic_path(snakemake.output.world) as tmp:
    world.to_json(tmp)

statements = W.statement_datasets(world)
for name, table in {**statements, **W.instruction_datasets(world)}.items():
    with io.atomic_path(snakemake.output[name]) as tmp:
        table.to_csv(tmp, index=False)
    extra = f", {int(table['label'].sum())} true" if "label" in table else ""
    held = f", {int(table['heldout'].sum())} held out" if "heldout" in table else ""
    splits = f", splits {table['split'].value_counts().to_dict()}" if "split" in table else ""
    log.info("%s: %d rows%s%s%s", name, len(table), extra, held, splits)
with io.atomic_path(snakemake.output.few_shot) as tmp:
    tmp.write_text(json.dumps(W.few_shot_samples(statements), indent=1))

tokenizer = build_tokenizer(world)
tokenizer.save_pretrained(snakemake.output.tokenizer)
log.info("world: %d countries, %d cities (%d held out), %d %s words (%d held out), %d number pairs "
         "(%d held out); tokenizer of %d tokens", len(world.countries), len(world.cities),
         len(world.heldout_cities), len(world.words), W.LANGUAGE, len(world.heldout_words),
         len(world.number_pairs), len(world.heldout_pairs), len(tokenizer))
