# Knowledge (METHODS.md section 3): activation patching within and across models.
#
# Files: results/knowledge/pairs/{family}/{dataset}.json (true/false pairs, prompts, token
# roles; tokenizer only), results/knowledge/sources/{model}/{dataset}.h5 (the true runs'
# block outputs, once per model), results/knowledge/patching/{source}/{target}/{dataset}.h5
# (the LD grid per pair; source == target is single-model patching); tables
# results/tables/knowledge_*.tsv; figures results/figures/knowledge/{family}/{dataset}_*.png.

include: "functions/knowledge.smk"


# --- tokenizer only ------------------------------------------------------------------------


rule knowledge_pairs:
    """True/false statement pairs matched by last word, their few-shot prompts and the role
    of each patched position, with the family's first model's tokenizer."""
    input:
        unpack(knowledge_pairs_input),
    output:
        json="results/knowledge/pairs/{family}/{dataset}.json",
    params:
        tokenizer=knowledge_pairs_tokenizer,
        settings=knowledge_pairs_settings,
    wildcard_constraints:
        family=FAMILY_NAMES,
    log:
        "logs/knowledge_pairs/{family}/{dataset}.log",
    conda:
        "../envs/ptmech.yaml"
    script:
        "../workflow_scripts/knowledge/pairs.py"


# --- live rules: need the model's weights --------------------------------------------------


rule knowledge_sources:
    """The true runs of one model on one dataset's pairs: every block's output at the
    patched positions (the source of patching into any model of the family) and the
    clean logit differences."""
    input:
        unpack(knowledge_sources_input),
    output:
        h5="results/knowledge/sources/{model}/{dataset}.h5",
    params:
        model=knowledge_source_model,
        settings=knowledge_sources_settings,
    threads: model_threads
    resources:
        gpu=model_gpu,
        gpu_model=model_gpu_model,
        mem_mb=model_mem_mb,
        runtime=model_runtime,
    log:
        "logs/knowledge_sources/{model}/{dataset}.log",
    benchmark:
        "results/benchmarks/knowledge_sources/{model}/{dataset}.tsv"
    conda:
        "../envs/ptmech.yaml"
    script:
        "../workflow_scripts/knowledge/sources.py"


rule knowledge_patch:
    """Patch the source model's true runs into the target model's false runs, one
    (block, position) cell at a time, batched; source == target is single-model patching."""
    input:
        unpack(knowledge_patch_input),
    output:
        h5="results/knowledge/patching/{source}/{target}/{dataset}.h5",
    params:
        model=knowledge_target_model,
        settings=knowledge_patch_settings,
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
        "logs/knowledge_patch/{source}/{target}/{dataset}.log",
    benchmark:
        "results/benchmarks/knowledge_patch/{source}/{target}/{dataset}.tsv"
    conda:
        "../envs/ptmech.yaml"
    script:
        "../workflow_scripts/knowledge/patch.py"


# --- aggregates and figures (cheap; rerun when anything they gather changes) -------------


rule knowledge_tables:
    """Mean heatmaps (raw and binned), clean baselines, and the difference statistics
    (max |diff| per role group, Pearson r) of base vs post, base->post vs post and
    post->base vs base."""
    input:
        unpack(knowledge_tables_input),
    output:
        heatmaps="results/tables/knowledge_heatmaps.tsv",
        differences="results/tables/knowledge_differences.tsv",
        baselines="results/tables/knowledge_baselines.tsv",
    params:
        models=model_info,
        settings=knowledge_tables_settings,
        premises=config["premises"],
    log:
        "logs/knowledge_tables/tables.log",
    conda:
        "../envs/ptmech.yaml"
    script:
        "../workflow_scripts/knowledge/tables.py"


rule knowledge_figures:
    input:
        heatmaps="results/tables/knowledge_heatmaps.tsv",
        differences="results/tables/knowledge_differences.tsv",
    output:
        heatmaps=report(
            "results/figures/knowledge/{family}/{dataset}_heatmaps.png",
            caption="../report/knowledge_heatmaps.rst",
            category="Knowledge",
            subcategory="{family}",
        ),
        raw=report(
            "results/figures/knowledge/{family}/{dataset}_heatmaps_raw.png",
            caption="../report/knowledge_heatmaps_raw.rst",
            category="Knowledge",
            subcategory="{family}",
        ),
        differences=report(
            "results/figures/knowledge/{family}/{dataset}_differences.png",
            caption="../report/knowledge_differences.rst",
            category="Knowledge",
            subcategory="{family}",
        ),
    params:
        models=knowledge_figure_models,
    wildcard_constraints:
        family=FAMILY_NAMES,
    log:
        "logs/knowledge_figures/{family}/{dataset}.log",
    conda:
        "../envs/ptmech.yaml"
    script:
        "../workflow_scripts/knowledge/figures.py"
