# Refusal (METHODS.md section 5; Arditi et al.): difference-of-means candidate directions per
# model (cache only), the direction of each model (configured, else Arditi et al.'s search on
# validation prompts with the model live), and generation under directional ablation
# (harmful test prompts) and activation addition (harmless test prompts) with every
# direction of the family on every target model, against the unsteered baseline.
#
# Files: results/refusal/{model}/candidates.npz, results/refusal/{model}/direction.{json,npz},
# results/refusal/{model}/selection.tsv, results/refusal/baseline/{model}.{jsonl,tsv},
# results/refusal/steering/{target}/{source}.{jsonl,tsv}; tables results/tables/refusal_*.tsv;
# figures results/figures/refusal/...
# Residual index k is the input of block k (the paper's refusal "resid_pre layer k").

REFUSAL = config["refusal"]


def refusal_active():
    """The stage runs when enabled and the config has an instruction prompt set at all (a
    config for other stages only, with no instructions, skips it rather than failing)."""
    return REFUSAL["enabled"] and any(ps["kind"] == "instructions" for ps in PROMPT_SETS.values())


def _refusal_check():
    """Check the refusal section against the rest of the config, naming the culprit key."""
    if not refusal_active():
        return
    ps = REFUSAL["prompt_set"]
    if ps not in PROMPT_SETS:
        raise WorkflowError(
            f"refusal.prompt_set: prompt set {ps!r} is not defined under prompt_sets "
            f"(defined: {', '.join(PROMPT_SETS) or 'none'}); set refusal.enabled: false to skip this stage"
        )
    if PROMPT_SETS[ps]["kind"] != "instructions":
        raise WorkflowError(f"refusal.prompt_set: prompt set {ps!r} is of kind {PROMPT_SETS[ps]['kind']!r}, "
                            f"not instructions")
    for key in ("harmful", "harmless"):
        ds = REFUSAL[key]
        if ds not in PROMPT_SETS[ps]["datasets"]:
            raise WorkflowError(f"refusal.{key}: dataset {ds!r} is not one of prompt_sets.{ps}.datasets "
                                f"({', '.join(PROMPT_SETS[ps]['datasets'])})")
    for m in REFUSAL["models"]:
        if m not in config["models"]:
            raise WorkflowError(f"refusal.models: model {m!r} is not defined under models "
                                f"(defined: {', '.join(MODELS)})")


def refusal_families():
    """family -> its models, in config order."""
    families = {}
    for m, spec in config["models"].items():
        families.setdefault(spec["family"], []).append(m)
    return families


def refusal_combinations():
    """(direction source, target model): every model's own direction on itself, and each
    ordered pair's source direction on its target."""
    return [(m, m) for m in MODELS] + list(ptcfg.model_pairs(config))


def refusal_model_knobs(model):
    """The model's configured refusal cell and coefficient: k from models.<m>.layers.refusal
    (resid_pre layer = residual index k), position and coefficient from refusal.models.<m>."""
    own = REFUSAL["models"].get(model, {})
    return {
        "k": config["models"][model].get("layers", {}).get("refusal"),
        "position": own.get("position"),
        "coefficient": own.get("coefficient", REFUSAL["addition"]["coefficient"]),
    }


def _refusal_data():
    return {key: f"results/data/{REFUSAL[key]}.tsv" for key in ("harmful", "harmless")}


def _refusal_split_settings():
    return {"split_fractions": REFUSAL["split_fractions"], "split_seed": REFUSAL["split_seed"]}


# --- input and params functions ----------------------------------------------------------


def refusal_candidates_input(wildcards):
    ps = REFUSAL["prompt_set"]
    return {
        "harmful_cache": cache_path(wildcards.model, ps, REFUSAL["harmful"]),
        "harmless_cache": cache_path(wildcards.model, ps, REFUSAL["harmless"]),
        **{f"{k}_data": v for k, v in _refusal_data().items()},
    }


def refusal_candidates_settings(wildcards):
    return {"n_train": REFUSAL["n_train"], **_refusal_split_settings()}


def refusal_live_input(wildcards):
    """The data tables and, for a local model, its folder (so a rule that makes it runs first)."""
    path = config["models"][wildcards.model]["path"]
    return {**{f"{k}_data": v for k, v in _refusal_data().items()},
            **({"model": path} if ptcfg.is_local_path(path) else {})}


def refusal_select_input(wildcards):
    return {"candidates": f"results/refusal/{wildcards.model}/candidates.npz", **refusal_live_input(wildcards)}


def refusal_live_model(wildcards):
    return ptcfg.extraction_model_spec(config, wildcards.model)


def _refusal_scoring_settings():
    return {
        "prefixes": REFUSAL["prefixes"],
        "refusal_tokens": REFUSAL["refusal_tokens"],
        "batch_size": REFUSAL["batch_size"],
        "device": config.get("extraction", {}).get("device", "auto"),
        **_refusal_split_settings(),
    }


def refusal_select_settings(wildcards):
    knobs = refusal_model_knobs(wildcards.model)
    return {
        **_refusal_scoring_settings(),
        "selection": REFUSAL["selection"],
        "k": knobs["k"],
        "position": knobs["position"],
        "addition": {**{k: v for k, v in REFUSAL["addition"].items() if k != "sweep"},
                     "coefficient": knobs["coefficient"]},
        "n_val": REFUSAL["n_val"],
    }


def refusal_generation_settings(wildcards):
    return {**_refusal_scoring_settings(), "generation": REFUSAL["generation"], "n_test": REFUSAL["n_test"]}


def refusal_steer_input(wildcards):
    return {
        "source_direction": f"results/refusal/{wildcards.source}/direction.npz",
        "target_direction": f"results/refusal/{wildcards.model}/direction.json",
        **refusal_live_input(wildcards),
    }


def refusal_steer_settings(wildcards):
    return {
        **refusal_generation_settings(wildcards),
        "addition": {**REFUSAL["addition"], "coefficient": refusal_model_knobs(wildcards.model)["coefficient"]},
    }


def refusal_tables_input(wildcards):
    return {
        "candidates": [f"results/refusal/{m}/candidates.npz" for m in MODELS],
        "directions": [f"results/refusal/{m}/direction.npz" for m in MODELS],
        "metas": [f"results/refusal/{m}/direction.json" for m in MODELS],
        "selections": [f"results/refusal/{m}/selection.tsv" for m in MODELS],
        "baselines": [f"results/refusal/baseline/{m}.tsv" for m in MODELS],
        "steering": [f"results/refusal/steering/{t}/{s}.tsv" for s, t in refusal_combinations()],
    }


def refusal_model_info(wildcards=None):
    return {m: {"family": s["family"], "role": s["role"]} for m, s in config["models"].items()}


def refusal_pair_info(wildcards=None):
    return [{"source": a, "target": b, "direction": ptcfg.direction(config, a, b)}
            for a, b in ptcfg.model_pairs(config)]


def refusal_pca_input(wildcards):
    family = config["models"][wildcards.model]["family"]
    ps = REFUSAL["prompt_set"]
    return {
        "harmful_cache": cache_path(wildcards.model, ps, REFUSAL["harmful"]),
        "harmless_cache": cache_path(wildcards.model, ps, REFUSAL["harmless"]),
        "meta": f"results/refusal/{wildcards.model}/direction.json",
        "directions": [f"results/refusal/{m}/direction.npz" for m in refusal_families()[family]],
        **{f"{k}_data": v for k, v in _refusal_data().items()},
    }


def refusal_pca_settings(wildcards):
    return {"n_test": REFUSAL["n_test"], **_refusal_split_settings()}


def refusal_outputs():
    if not refusal_active():
        return []
    outs = [f"results/tables/refusal_{t}.tsv" for t in ("scores", "selection", "cosine")]
    outs += [f"results/figures/refusal/scores/{f}.png" for f in refusal_families()]
    outs += [f"results/figures/refusal/cosine/{f}.png" for f, ms in refusal_families().items() if len(ms) > 1]
    outs += [f"results/figures/refusal/pca/{m}.png" for m in MODELS]
    return outs


_refusal_check()
STAGE_OUTPUTS.append(refusal_outputs)
REFUSAL_MODEL = "|".join(map(re.escape, MODELS)) if MODELS else "^$"
REFUSAL_FAMILY = "|".join(map(re.escape, refusal_families())) if MODELS else "^$"


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
    script:
        "../workflow_scripts/refusal_candidates.py"


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
    resources:
        gpu=model_gpu,
        gpu_model=model_gpu_model,
        mem_mb=model_mem_mb,
        runtime=model_runtime,
    log:
        "logs/refusal_select/{model}.log",
    benchmark:
        "results/benchmarks/refusal_select/{model}.tsv"
    script:
        "../workflow_scripts/refusal_select.py"


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
    resources:
        gpu=model_gpu,
        gpu_model=model_gpu_model,
        mem_mb=model_mem_mb,
        runtime=model_runtime,
    log:
        "logs/refusal_baseline/{model}.log",
    benchmark:
        "results/benchmarks/refusal_baseline/{model}.tsv"
    script:
        "../workflow_scripts/refusal_steer.py"


rule refusal_steer:
    """Greedy generations of the target model with the source model's direction ablated at
    every layer (harmful test prompts) and added at the target's layer (harmless test prompts)."""
    input:
        unpack(refusal_steer_input),
    output:
        generations="results/refusal/steering/{model}/{source}.jsonl",
        scores="results/refusal/steering/{model}/{source}.tsv",
    params:
        model=refusal_live_model,
        settings=refusal_steer_settings,
    wildcard_constraints:
        source=REFUSAL_MODEL,
    resources:
        gpu=model_gpu,
        gpu_model=model_gpu_model,
        mem_mb=model_mem_mb,
        runtime=model_runtime,
    log:
        "logs/refusal_steer/{model}/{source}.log",
    benchmark:
        "results/benchmarks/refusal_steer/{model}/{source}.tsv"
    script:
        "../workflow_scripts/refusal_steer.py"


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
        models=refusal_model_info,
        pairs=refusal_pair_info,
    log:
        "logs/refusal_tables/tables.log",
    script:
        "../workflow_scripts/refusal_tables.py"


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
    wildcard_constraints:
        family=REFUSAL_FAMILY,
    log:
        "logs/refusal_scores_figure/{family}.log",
    script:
        "../workflow_scripts/refusal_figures.py"


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
    wildcard_constraints:
        family=REFUSAL_FAMILY,
    log:
        "logs/refusal_cosine_figure/{family}.log",
    script:
        "../workflow_scripts/refusal_figures.py"


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
        settings=refusal_pca_settings,
    log:
        "logs/refusal_pca/{model}.log",
    script:
        "../workflow_scripts/refusal_pca.py"
