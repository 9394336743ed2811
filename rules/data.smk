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
        "../workflow_scripts/data/dataset.py"


localrules:
    dataset_sized,


rule dataset_sized:
    """Check that a dataset the parse could not read is large enough for every setting that
    uses it (demonstrations, both labels, refusal splits), before it is extracted; the
    message names the setting. A script, not a run: block (Snakemake runs those by starting
    another Snakemake, about 3 s a job): pandas only, no model."""
    input:
        tsv="results/data/{dataset}.tsv",
    output:
        "results/data/{dataset}.sized",
    params:
        needs=dataset_needs,
    log:
        "logs/dataset/{dataset}.sized.log",
    conda:
        "../envs/ptmech.yaml"
    script:
        "../workflow_scripts/data/sized.py"
