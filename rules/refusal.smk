# Refusal (METHODS.md section 5; Arditi et al.): difference-of-means candidate directions per
# model (cache only), the direction of each model (configured, else Arditi et al.'s search on
# validation prompts with the model live), and generation under directional ablation
# (harmful test prompts) and activation addition (harmless test prompts) with every
# direction of the family on every target model, against the unsteered baseline.
#
# Files: results/refusal/{model}/candidates.npz, results/refusal/{model}/direction.{json,npz},
# results/refusal/{model}/selection.tsv, results/refusal/baseline/{model}.{jsonl,tsv},
# results/refusal/steering/{source}/{target}.{jsonl,tsv}; tables results/tables/refusal_*.tsv;
# figures results/figures/refusal/...
# Residual index k is the input of block k (the paper's refusal "resid_pre layer k").

include: "functions/refusal.smk"


# --- cache-only rule ----------------------------------------------------------------------


rule refusal_candidates:
    """Difference-of-means candidate refusal directions (harmful minus harmless train
    prompts) at every cached residual index and post-instruction position of one model."""
    input:
        unpack(refusal_candidates_input),
    output:
        candidates="results/refusal/{model}/candidates.npz",
    params:
        settings=refusal_candidates_settings,
    log:
        "logs/refusal_candidates/{model}.log",
    conda:
        "../envs/ptmech.yaml"
    script:
        "../workflow_scripts/refusal/candidates.py"


# --- live rules: need the model's weights --------------------------------------------------


rule refusal_select:
    """The model's refusal direction: the configured (k, position), else Arditi et al.'s
    search (ablation / addition refusal scores and ablation KL on validation prompts)."""
    input:
        unpack(refusal_select_input),
    output:
        direction="results/refusal/{model}/direction.npz",
        meta="results/refusal/{model}/direction.json",
        selection="results/refusal/{model}/selection.tsv",
    params:
        model=refusal_live_model,
        settings=refusal_select_settings,
    threads: model_threads
    resources:
        gpu=model_gpu,
        gpu_model=model_gpu_model,
        mem_mb=model_mem_mb,
        runtime=model_runtime,
    log:
        "logs/refusal_select/{model}.log",
    benchmark:
        "results/benchmarks/refusal_select/{model}.tsv"
    conda:
        "../envs/ptmech.yaml"
    script:
        "../workflow_scripts/refusal/selection.py"


rule refusal_baseline:
    """Unsteered greedy generations of one model on the harmful and harmless test prompts."""
    input:
        unpack(refusal_live_input),
    output:
        generations="results/refusal/baseline/{model}.jsonl",
        scores="results/refusal/baseline/{model}.tsv",
    params:
        model=refusal_live_model,
        settings=refusal_generation_settings,
    threads: model_threads
    resources:
        gpu=model_gpu,
        gpu_model=model_gpu_model,
        mem_mb=model_mem_mb,
        runtime=model_runtime,
    log:
        "logs/refusal_baseline/{model}.log",
    benchmark:
        "results/benchmarks/refusal_baseline/{model}.tsv"
    conda:
        "../envs/ptmech.yaml"
    script:
        "../workflow_scripts/refusal/steer.py"


rule refusal_steer:
    """Greedy generations of the target model with the source model's direction ablated at
    every layer (harmful test prompts) and added at the target's layer (harmless test prompts)."""
    input:
        unpack(refusal_steer_input),
    output:
        generations="results/refusal/steering/{source}/{target}.jsonl",
        scores="results/refusal/steering/{source}/{target}.tsv",
    params:
        model=refusal_steer_model,
        settings=refusal_steer_settings,
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
        "logs/refusal_steer/{source}/{target}.log",
    benchmark:
        "results/benchmarks/refusal_steer/{source}/{target}.tsv"
    conda:
        "../envs/ptmech.yaml"
    script:
        "../workflow_scripts/refusal/steer.py"


# --- aggregates and figures (cheap; rerun when anything they gather changes) -------------


rule refusal_tables:
    """Tidy tables over all models: refusal scores per (target, direction, operation), every
    candidate's selection scores, and the direction cosines per residual index."""
    input:
        unpack(refusal_tables_input),
    output:
        scores="results/tables/refusal_scores.tsv",
        selection="results/tables/refusal_selection.tsv",
        cosine="results/tables/refusal_cosine.tsv",
    params:
        models=model_info,
        pairs=pair_info,
        unordered=unordered_pairs,
        premises=config["premises"],
    log:
        "logs/refusal_tables/tables.log",
    conda:
        "../envs/ptmech.yaml"
    script:
        "../workflow_scripts/refusal/tables.py"


rule refusal_scores_figure:
    input:
        table="results/tables/refusal_scores.tsv",
    output:
        figure=report(
            "results/figures/refusal/scores/{family}.png",
            caption="../report/refusal_scores.rst",
            category="Refusal",
            subcategory="{family}",
        ),
    params:
        kind="scores",
        models=model_info,
    wildcard_constraints:
        family=FAMILY_NAMES,
    log:
        "logs/refusal_scores_figure/{family}.log",
    conda:
        "../envs/ptmech.yaml"
    script:
        "../workflow_scripts/refusal/figures.py"


rule refusal_cosine_figure:
    input:
        table="results/tables/refusal_cosine.tsv",
    output:
        figure=report(
            "results/figures/refusal/cosine/{family}.png",
            caption="../report/refusal_cosine.rst",
            category="Refusal",
            subcategory="{family}",
        ),
    params:
        kind="cosine",
        models=model_info,
    wildcard_constraints:
        family=FAMILY_NAMES,
    log:
        "logs/refusal_cosine_figure/{family}.log",
    conda:
        "../envs/ptmech.yaml"
    script:
        "../workflow_scripts/refusal/figures.py"


rule refusal_pca:
    """Figure 1(c): harmful and harmless test prompts of one model in the PCA plane of its
    residual stream at its refusal cell, with every family member's refusal direction."""
    input:
        unpack(refusal_pca_input),
    output:
        figure=report(
            "results/figures/refusal/pca/{model}.png",
            caption="../report/refusal_pca.rst",
            category="Refusal",
            subcategory="{model}",
        ),
    params:
        models=model_info,
        settings=refusal_pca_settings,
    log:
        "logs/refusal_pca/{model}.log",
    conda:
        "../envs/ptmech.yaml"
    script:
        "../workflow_scripts/refusal/pca.py"
