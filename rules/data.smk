rule dataset:
    """Read a dataset (local file, organism generator or hub) and normalise its columns."""
    input:
        unpack(dataset_input),
    output:
        tsv="results/data/{dataset}.tsv",
    params:
        spec=dataset_spec,
    log:
        "logs/dataset/{dataset}.log",
    conda:
        "../envs/ptmech.yaml"
    script:
        "../workflow_scripts/dataset.py"
