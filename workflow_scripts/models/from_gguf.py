"""Convert one models.<m>.gguf file into the model's transformers folder."""

from ptmech import gguf, logs

log = logs.to_file(snakemake.log[0])
gguf.convert(snakemake.input.gguf, snakemake.output.model, name=snakemake.params.name)
