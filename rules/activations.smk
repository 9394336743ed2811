rule extract:
    """Residual stream of one model on one dataset rendered through one prompt set:
    THE CACHE that every cache-only analysis reads."""
    input:
        unpack(extract_input),
    output:
        h5="results/activations/{model}/{prompt_set}/{dataset}.h5",
    params:
        model=extraction_model,
        prompt_set=extraction_prompt_set,
        settings=extraction_settings,
    threads: model_threads
    resources:
        gpu=model_gpu,
        gpu_model=model_gpu_model,
        mem_mb=model_mem_mb,
        runtime=model_runtime,
    log:
        "logs/extract/{model}/{prompt_set}/{dataset}.log",
    benchmark:
        "results/benchmarks/extract/{model}/{prompt_set}/{dataset}.tsv"
    conda:
        "../envs/ptmech.yaml"
    script:
        "../workflow_scripts/activations/extract.py"
