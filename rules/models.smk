# Models this workflow makes from a file (the organism's trio is trained in organism.smk):
# a models.<m>.gguf file converted once into the transformers folder models.<m>.path.

import re

GGUF_FOLDERS = ptcfg.gguf_folders(config)


rule model_from_gguf:
    """De-quantise a GGUF file into a transformers folder (float32 safetensors, config.json,
    tokenizer; gguf.json says from which file, by sha256)."""
    input:
        gguf=lambda w: config["models"][GGUF_FOLDERS[w.gguf_folder]]["gguf"],
    output:
        model=directory("{gguf_folder}"),
    wildcard_constraints:
        gguf_folder="|".join(re.escape(f) for f in GGUF_FOLDERS) or "(?!)",  # (?!) matches nothing
    params:
        name=lambda w: GGUF_FOLDERS[w.gguf_folder],
    threads: 1
    resources:
        # a 4-bit file grows about 8x into float32, and the loader holds both
        mem_mb=lambda w, input: 2000 + 10 * int(Path(input.gguf).stat().st_size / 2**20),
    log:
        "logs/model_from_gguf/{gguf_folder}.log",
    benchmark:
        "results/benchmarks/model_from_gguf/{gguf_folder}.tsv"
    conda:
        "../envs/ptmech.yaml"
    script:
        "../workflow_scripts/models/from_gguf.py"
