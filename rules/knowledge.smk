# Knowledge (METHODS.md section 3): activation patching within and across models.
#
# Files: results/knowledge/pairs/{family}/{dataset}.json (true/false pairs, prompts, token
# roles; tokenizer only), results/knowledge/sources/{model}/{dataset}.h5 (the true runs'
# block outputs, once per model), results/knowledge/patching/{source}/{target}/{dataset}.h5
# (the LD grid per pair; source == target is single-model patching); tables
# results/tables/knowledge_*.tsv; figures results/figures/knowledge/{family}/{dataset}_*.png.

from ptmech import statement_pairs

KNOWLEDGE = config["knowledge"]


def knowledge_families():
    """family -> its models, in config order."""
    families = {}
    for m, spec in config["models"].items():
        families.setdefault(spec["family"], []).append(m)
    return families


def knowledge_datasets():
    """The datasets to patch: knowledge.datasets, else every statements dataset with a skeleton."""
    if not KNOWLEDGE["enabled"]:
        return []
    if KNOWLEDGE["datasets"] is not None:
        return list(KNOWLEDGE["datasets"])
    return [
        name
        for name, spec in config["datasets"].items()
        if spec["kind"] == "statements" and (name in KNOWLEDGE["skeletons"] or name in statement_pairs.DEFAULT_SKELETONS)
    ]


def _knowledge_check():
    """Check the knowledge section against the rest of the config, naming the culprit key."""
    for ds in knowledge_datasets():
        if ds not in config["datasets"]:
            raise WorkflowError(
                f"knowledge.datasets: dataset {ds!r} is not defined under datasets "
                f"(defined: {', '.join(config['datasets']) or 'none'})"
            )
        if config["datasets"][ds]["kind"] != "statements":
            raise WorkflowError(f"knowledge.datasets: dataset {ds!r} is of kind {config['datasets'][ds]['kind']!r}, not statements")
        try:
            statement_pairs.skeletons_for(ds, KNOWLEDGE["skeletons"])
        except statement_pairs.PairsError as e:
            raise WorkflowError(str(e)) from None
    for key in ("skeletons", "queries"):
        for ds in KNOWLEDGE[key]:
            if ds not in config["datasets"]:
                raise WorkflowError(f"knowledge.{key}: dataset {ds!r} is not defined under datasets")


def knowledge_tokenizer_model(family):
    """The model whose tokenizer makes the family's pairs: the family's first model (the
    others are checked against it when they are loaded)."""
    return knowledge_families()[family][0]


def knowledge_combinations():
    """(source, target): every model on itself (single-model patching), then each ordered
    pair of model_pairs within one family (cross-model patching needs a shared tokenizer,
    so pairs across families are left out)."""
    family = {m: s["family"] for m, s in config["models"].items()}
    return [(m, m) for m in MODELS] + [(a, b) for a, b in ptcfg.model_pairs(config) if family[a] == family[b]]


def _model_folder(name):
    path = config["models"][name]["path"]
    return {"model": path} if ptcfg.is_local_path(path) else {}


def knowledge_pairs_path(family, dataset):
    return f"results/knowledge/pairs/{family}/{dataset}.json"


def knowledge_patching_path(source, target, dataset):
    return f"results/knowledge/patching/{source}/{target}/{dataset}.h5"


# --- input and params functions ----------------------------------------------------------


def knowledge_pairs_input(wildcards):
    return {"data": f"results/data/{wildcards.dataset}.tsv", **_model_folder(knowledge_tokenizer_model(wildcards.family))}


def knowledge_pairs_tokenizer(wildcards):
    name = knowledge_tokenizer_model(wildcards.family)
    spec = config["models"][name]
    return {"model": name, **{k: spec[k] for k in ("path", "revision") if k in spec}}


def knowledge_pairs_settings(wildcards):
    return {
        "skeletons": statement_pairs.skeletons_for(wildcards.dataset, KNOWLEDGE["skeletons"]),
        "query": KNOWLEDGE["queries"].get(wildcards.dataset, KNOWLEDGE["query"]),
        **{k: KNOWLEDGE[k] for k in ("pair_by", "reuse_unique_false", "max_pairs", "n_true_demos", "n_false_demos", "seed")},
    }


def knowledge_sources_input(wildcards):
    family = config["models"][wildcards.model]["family"]
    return {"pairs": knowledge_pairs_path(family, wildcards.dataset), **_model_folder(wildcards.model)}


def _knowledge_model(name):
    return {**ptcfg.extraction_model_spec(config, name), "family": config["models"][name]["family"]}


def knowledge_source_model(wildcards):
    return _knowledge_model(wildcards.model)


def knowledge_target_model(wildcards):
    return _knowledge_model(wildcards.target)


def knowledge_sources_settings(wildcards):
    return {k: KNOWLEDGE[k] for k in ("batch_size", "storage_dtype", "device", "multi_token_answers")}


def knowledge_patch_input(wildcards):
    family = config["models"][wildcards.target]["family"]
    return {
        "sources": f"results/knowledge/sources/{wildcards.source}/{wildcards.dataset}.h5",
        "pairs": knowledge_pairs_path(family, wildcards.dataset),
        **_model_folder(wildcards.target),
    }


def knowledge_patch_settings(wildcards):
    direction = "single" if wildcards.source == wildcards.target else ptcfg.direction(config, wildcards.source, wildcards.target)
    return {
        "source": wildcards.source,
        "direction": direction,
        **{k: KNOWLEDGE[k] for k in ("batch_size", "reuse_clean_run", "device", "multi_token_answers")},
    }


def knowledge_tables_input(wildcards):
    return {
        "patching": [
            knowledge_patching_path(s, t, ds) for s, t in knowledge_combinations() for ds in knowledge_datasets()
        ]
    }


def knowledge_model_info(wildcards=None):
    return {m: {"family": s["family"], "role": s["role"]} for m, s in config["models"].items()}


def knowledge_tables_settings(wildcards):
    return {"bins": KNOWLEDGE["bins"]}


def knowledge_figure_models(wildcards):
    return knowledge_families()[wildcards.family]


def knowledge_outputs():
    datasets = knowledge_datasets()
    if not datasets:
        return []
    outs = [f"results/tables/knowledge_{t}.tsv" for t in ("heatmaps", "differences", "baselines")]
    for family in knowledge_families():
        for ds in datasets:
            outs += [f"results/figures/knowledge/{family}/{ds}_{kind}.png" for kind in ("heatmaps", "heatmaps_raw", "differences")]
    return outs


_knowledge_check()
if KNOWLEDGE["enabled"] and not knowledge_datasets():
    print("knowledge: skipped (no statements dataset has a skeleton; set knowledge.datasets and knowledge.skeletons)")
STAGE_OUTPUTS.append(knowledge_outputs)
KNOWLEDGE_MODEL = "|".join(map(re.escape, MODELS)) if MODELS else "^$"
KNOWLEDGE_FAMILY = "|".join(map(re.escape, knowledge_families())) if MODELS else "^$"


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
        family=KNOWLEDGE_FAMILY,
    log:
        "logs/knowledge_pairs/{family}/{dataset}.log",
    script:
        "../workflow_scripts/knowledge_pairs.py"


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
    resources:
        gpu=model_gpu,
        gpu_model=model_gpu_model,
        mem_mb=model_mem_mb,
        runtime=model_runtime,
    log:
        "logs/knowledge_sources/{model}/{dataset}.log",
    benchmark:
        "results/benchmarks/knowledge_sources/{model}/{dataset}.tsv"
    script:
        "../workflow_scripts/knowledge_sources.py"


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
        source=KNOWLEDGE_MODEL,
        target=KNOWLEDGE_MODEL,
    resources:
        gpu=model_gpu,
        gpu_model=model_gpu_model,
        mem_mb=model_mem_mb,
        runtime=model_runtime,
    log:
        "logs/knowledge_patch/{source}/{target}/{dataset}.log",
    benchmark:
        "results/benchmarks/knowledge_patch/{source}/{target}/{dataset}.tsv"
    script:
        "../workflow_scripts/knowledge_patch.py"


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
        models=knowledge_model_info,
        settings=knowledge_tables_settings,
    log:
        "logs/knowledge_tables/tables.log",
    script:
        "../workflow_scripts/knowledge_tables.py"


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
        family=KNOWLEDGE_FAMILY,
    log:
        "logs/knowledge_figures/{family}/{dataset}.log",
    script:
        "../workflow_scripts/knowledge_figures.py"
