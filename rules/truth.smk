# Truthfulness (METHODS.md section 4): probes per model and layer (cache only), the family's
# probe layer, probe transfer (the 2x2 matrix holds both orders) and direction cosines per
# pair (cache only), the Figure 1(b) PCA per pair (cache only), and steering with each
# model's direction on each live target model of a pair (the paper's four conditions).
#
# Files: results/truth/{model}/probes.{tsv,npz}, results/truth/families/{family}/layers.json,
# results/truth/pairs/{source}/{target}/{transfer,cosine,pca}.tsv,
# results/truth/steering/{source}/{target}/{dataset}.{tsv,json};
# tables results/tables/truth_*.tsv; figures results/figures/truth/...

include: "functions/truth.smk"


# --- cache-only rules ---------------------------------------------------------------------


rule truth_probes:
    """Leave-one-dataset-out probes of one model at every residual index (layer sweep)."""
    input:
        unpack(truth_probe_input),
    output:
        table="results/truth/{model}/probes.tsv",
        probes="results/truth/{model}/probes.npz",
    params:
        settings=truth_probe_settings,
    log:
        "logs/truth_probes/{model}.log",
    benchmark:
        "results/benchmarks/truth_probes/{model}.tsv"
    conda:
        "../envs/ptmech.yaml"
    script:
        "../workflow_scripts/truth/probes.py"


rule truth_layers:
    """The family's probe layer (configured, else the base model's best held-out layer) and
    steering layers, with the scores that chose them."""
    input:
        unpack(truth_layers_input),
    output:
        json="results/truth/families/{family}/layers.json",
    params:
        settings=truth_layers_settings,
    wildcard_constraints:
        family=FAMILY_NAMES,
    log:
        "logs/truth_layers/{family}.log",
    conda:
        "../envs/ptmech.yaml"
    script:
        "../workflow_scripts/truth/layers.py"


rule truth_transfer:
    """2x2 probe-transfer accuracies (each model's probe on each model's activations) and
    direction cosines of a pair, per held-out dataset and residual index."""
    input:
        unpack(truth_pair_input),
    output:
        transfer="results/truth/pairs/{source}/{target}/transfer.tsv",
        cosine="results/truth/pairs/{source}/{target}/cosine.tsv",
    params:
        settings=truth_pair_settings,
    wildcard_constraints:
        source=MODEL_NAMES,
        target=MODEL_NAMES,
    log:
        "logs/truth_transfer/{source}/{target}.log",
    benchmark:
        "results/benchmarks/truth_transfer/{source}/{target}.tsv"
    conda:
        "../envs/ptmech.yaml"
    script:
        "../workflow_scripts/truth/transfer.py"


rule truth_pca:
    """Figure 1(b): true and false statements of both models in one PCA plane at the
    probe layer, with both models' truth directions."""
    input:
        unpack(truth_pca_input),
    output:
        table="results/truth/pairs/{source}/{target}/pca.tsv",
        figure=report(
            "results/figures/truth/pca/{source}~{target}.png",
            caption="../report/truth_pca.rst",
            category="Truthfulness",
            subcategory="{source} ~ {target}",
        ),
    params:
        models=model_info,
        settings=truth_pca_settings,
    wildcard_constraints:
        source=MODEL_NAMES,
        target=MODEL_NAMES,
    log:
        "logs/truth_pca/{source}/{target}.log",
    conda:
        "../envs/ptmech.yaml"
    script:
        "../workflow_scripts/truth/pca.py"


# --- live rule: needs the target model's weights -----------------------------------------


rule truth_steer:
    """The paper's intervention: the source model's truth direction subtracted on true and
    added on false statements of the target model's few-shot query."""
    input:
        unpack(truth_steer_input),
    output:
        table="results/truth/steering/{source}/{target}/{dataset}.tsv",
        summary="results/truth/steering/{source}/{target}/{dataset}.json",
    params:
        model=truth_steer_model,
        settings=truth_steer_settings,
    wildcard_constraints:
        source=MODEL_NAMES,
        target=MODEL_NAMES,
    threads: model_threads
    resources:
        gpu=model_gpu,
        gpu_model=model_gpu_model,
        mem_mb=model_mem_mb,
        runtime=model_runtime,
    log:
        "logs/truth_steer/{source}/{target}/{dataset}.log",
    benchmark:
        "results/benchmarks/truth_steer/{source}/{target}/{dataset}.tsv"
    conda:
        "../envs/ptmech.yaml"
    script:
        "../workflow_scripts/truth/steer.py"


# --- aggregates and figures (cheap; rerun when anything they gather changes) -------------


rule truth_tables:
    """Tidy tables over all models and pairs: probe accuracy per layer, the families'
    layers, the 2x2 transfer accuracies and the direction cosines."""
    input:
        unpack(truth_tables_input),
    output:
        accuracy="results/tables/truth_probe_accuracy.tsv",
        layers="results/tables/truth_layers.tsv",
        transfer="results/tables/truth_transfer.tsv",
        cosine="results/tables/truth_cosine.tsv",
    params:
        models=model_info,
        pairs=pair_info,
    log:
        "logs/truth_tables/tables.log",
    conda:
        "../envs/ptmech.yaml"
    script:
        "../workflow_scripts/truth/tables.py"


rule truth_steering_table:
    """The steering scores of every (direction source, target model, dataset)."""
    input:
        unpack(truth_steering_input),
    output:
        table="results/tables/truth_steering.tsv",
    params:
        models=model_info,
        pairs=pair_info,
    log:
        "logs/truth_steering_table/table.log",
    conda:
        "../envs/ptmech.yaml"
    script:
        "../workflow_scripts/truth/steering_table.py"


rule truth_accuracy_figure:
    input:
        accuracy="results/tables/truth_probe_accuracy.tsv",
        layers="results/tables/truth_layers.tsv",
    output:
        figure=report(
            "results/figures/truth/accuracy/{family}.png",
            caption="../report/truth_accuracy.rst",
            category="Truthfulness",
            subcategory="{family}",
        ),
    params:
        kind="accuracy",
        models=model_info,
    wildcard_constraints:
        family=FAMILY_NAMES,
    log:
        "logs/truth_accuracy_figure/{family}.log",
    conda:
        "../envs/ptmech.yaml"
    script:
        "../workflow_scripts/truth/figures.py"


rule truth_cosine_figure:
    input:
        cosine="results/tables/truth_cosine.tsv",
        layers="results/tables/truth_layers.tsv",
    output:
        figure=report(
            "results/figures/truth/cosine/{family}.png",
            caption="../report/truth_cosine.rst",
            category="Truthfulness",
            subcategory="{family}",
        ),
    params:
        kind="cosine",
        models=model_info,
    wildcard_constraints:
        family=FAMILY_NAMES,
    log:
        "logs/truth_cosine_figure/{family}.log",
    conda:
        "../envs/ptmech.yaml"
    script:
        "../workflow_scripts/truth/figures.py"


rule truth_transfer_figure:
    input:
        transfer="results/tables/truth_transfer.tsv",
        layers="results/tables/truth_layers.tsv",
    output:
        figure=report(
            "results/figures/truth/transfer/{source}~{target}.png",
            caption="../report/truth_transfer.rst",
            category="Truthfulness",
            subcategory="{source} ~ {target}",
        ),
    params:
        kind="transfer",
        models=model_info,
    wildcard_constraints:
        source=MODEL_NAMES,
        target=MODEL_NAMES,
    log:
        "logs/truth_transfer_figure/{source}~{target}.log",
    conda:
        "../envs/ptmech.yaml"
    script:
        "../workflow_scripts/truth/figures.py"


rule truth_steering_figure:
    input:
        steering="results/tables/truth_steering.tsv",
    output:
        figure=report(
            "results/figures/truth/steering/{family}.png",
            caption="../report/truth_steering.rst",
            category="Truthfulness",
            subcategory="{family}",
        ),
    params:
        kind="steering",
        models=model_info,
    wildcard_constraints:
        family=FAMILY_NAMES,
    log:
        "logs/truth_steering_figure/{family}.log",
    conda:
        "../envs/ptmech.yaml"
    script:
        "../workflow_scripts/truth/figures.py"
