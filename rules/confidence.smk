# Confidence: entropy neurons of the last MLP layer (METHODS.md §6). Per-model jobs compute
# each neuron's norm and LogitVar from the weights (no text is run), and, optionally, mean-
# ablate the selected neurons on a text set; cheap aggregates then select the neurons over the
# (p, n) grid, compare models by IoU and draw the figures.

CONFIDENCE = config["confidence"]
CONFIDENCE_ABLATION = CONFIDENCE["ablation"]

for _ds in CONFIDENCE_ABLATION["datasets"]:
    if _ds not in config["datasets"]:
        raise WorkflowError(
            f"invalid config: confidence.ablation.datasets: dataset {_ds!r} is not defined under "
            f"datasets (defined: {', '.join(config['datasets']) or 'none'})"
        )


def confidence_families():
    """family -> its models, in config order."""
    families = {}
    for m, spec in config["models"].items():
        families.setdefault(spec["family"], []).append(m)
    return families


def confidence_family_models(wildcards):
    return confidence_families()[wildcards.family]


def confidence_model(wildcards):
    """The model entry that changes its weights as loaded, in the stage's dtype (§0.2:
    confidence runs in fp32 by default)."""
    spec = ptcfg.extraction_model_spec(config, wildcards.model)
    return {**spec, "dtype": CONFIDENCE["dtype"], "device": CONFIDENCE["device"]}


def confidence_weights_settings(wildcards):
    return {"chunk_size": CONFIDENCE["chunk_size"]}


def confidence_selection(wildcards=None):
    """The paper's (p, n) and the grid; the grid always holds the default point."""
    p, n = CONFIDENCE["top_norm_fraction"], CONFIDENCE["n_neurons"]
    fractions = sorted(set(CONFIDENCE["grid"]["top_norm_fraction"]) | {p})
    ns = sorted(set(CONFIDENCE["grid"]["n_neurons"]) | {n})
    return {"top_norm_fraction": p, "n_neurons": n, "grid": {"top_norm_fraction": fractions, "n_neurons": ns}}


def confidence_default_selection(wildcards):
    return {"top_norm_fraction": CONFIDENCE["top_norm_fraction"], "n_neurons": CONFIDENCE["n_neurons"]}


def confidence_ablation_input(wildcards):
    return {
        "neurons": f"results/confidence/{wildcards.model}/neurons.tsv",
        "data": [f"results/data/{ds}.tsv" for ds in CONFIDENCE_ABLATION["datasets"]],
        "text_files": list(CONFIDENCE_ABLATION["text_files"]),
        **model_input(wildcards),
    }


def confidence_ablation_settings(wildcards):
    return dict(CONFIDENCE_ABLATION)


def confidence_models_meta(wildcards=None):
    """model -> family and role (for the aggregate tables)."""
    return {m: {"family": s["family"], "role": s["role"]} for m, s in config["models"].items()}


def confidence_family_meta(wildcards):
    return {m: confidence_models_meta()[m] for m in confidence_family_models(wildcards)}


def confidence_pairs(wildcards=None):
    """Unordered model pairs (IoU is symmetric), from ptcfg.model_pairs."""
    seen, out = set(), []
    for a, b in ptcfg.model_pairs(config):
        if frozenset((a, b)) not in seen:
            seen.add(frozenset((a, b)))
            out.append([a, b])
    return out


def confidence_family_pairs(wildcards):
    members = set(confidence_family_models(wildcards))
    return [p for p in confidence_pairs() if set(p) <= members]


def confidence_all_neurons(wildcards=None):
    return {m: f"results/confidence/{m}/neurons.tsv" for m in MODELS}


def confidence_family_neurons(wildcards):
    return {m: f"results/confidence/{m}/neurons.tsv" for m in confidence_family_models(wildcards)}


def confidence_all_ablations(wildcards=None):
    return {m: f"results/confidence/{m}/ablation.tsv" for m in MODELS}


def confidence_family_ablations(wildcards):
    return {m: f"results/confidence/{m}/ablation.tsv" for m in confidence_family_models(wildcards)}


def confidence_outputs():
    families = confidence_families()
    pairs = confidence_pairs()
    outs = [
        "results/tables/confidence_neurons.tsv",
        "results/tables/confidence_entropy_neurons.tsv",
        "results/tables/confidence_iou.tsv",
    ]
    outs += [f"results/figures/confidence/scatter/{m}.png" for m in MODELS]
    for family, members in families.items():
        if any(set(p) <= set(members) for p in pairs):
            outs.append(f"results/figures/confidence/iou/{family}.png")
        if len(members) in (2, 3):
            outs.append(f"results/figures/confidence/venn/{family}.png")
    if CONFIDENCE_ABLATION["datasets"] or CONFIDENCE_ABLATION["text_files"]:
        outs.append("results/tables/confidence_ablation.tsv")
        outs += [f"results/figures/confidence/ablation/{f}.png" for f in families]
    return outs


STAGE_OUTPUTS.append(confidence_outputs)


rule confidence_neurons:
    """Norm and LogitVar of every last-layer MLP neuron, from the weights only."""
    input:
        unpack(model_input),
    output:
        tsv="results/confidence/{model}/neurons.tsv",
    params:
        model=confidence_model,
        settings=confidence_weights_settings,
    resources:
        gpu=model_gpu,
        gpu_model=model_gpu_model,
        mem_mb=model_mem_mb,
        runtime=model_runtime,
    log:
        "logs/confidence_neurons/{model}.log",
    benchmark:
        "results/benchmarks/confidence_neurons/{model}.tsv"
    script:
        "../workflow_scripts/confidence_neurons.py"


rule confidence_ablation:
    """Mean-ablate the model's entropy neurons (and random control neurons) on the text set:
    change in next-token entropy and loss, total and direct effect."""
    input:
        unpack(confidence_ablation_input),
    output:
        tsv="results/confidence/{model}/ablation.tsv",
    params:
        model=confidence_model,
        selection=confidence_default_selection,
        settings=confidence_ablation_settings,
    resources:
        gpu=model_gpu,
        gpu_model=model_gpu_model,
        mem_mb=model_mem_mb,
        runtime=model_runtime,
    log:
        "logs/confidence_ablation/{model}.log",
    benchmark:
        "results/benchmarks/confidence_ablation/{model}.tsv"
    script:
        "../workflow_scripts/confidence_ablation.py"


rule confidence_tables:
    """Per-neuron statistics of all models, their entropy neurons over the (p, n) grid and
    the IoU of every model pair."""
    input:
        unpack(confidence_all_neurons),
    output:
        neurons="results/tables/confidence_neurons.tsv",
        selected="results/tables/confidence_entropy_neurons.tsv",
        iou="results/tables/confidence_iou.tsv",
    params:
        models=confidence_models_meta,
        pairs=confidence_pairs,
        selection=confidence_selection,
    log:
        "logs/confidence_tables/all.log",
    script:
        "../workflow_scripts/confidence_tables.py"


rule confidence_ablation_table:
    """The ablation effects of all models in one table."""
    input:
        unpack(confidence_all_ablations),
    output:
        tsv="results/tables/confidence_ablation.tsv",
    params:
        models=confidence_models_meta,
    log:
        "logs/confidence_ablation_table/all.log",
    script:
        "../workflow_scripts/confidence_ablation_table.py"


rule confidence_scatter:
    """Norm vs LogitVar of one model's last-layer neurons (Figure 1(c) style)."""
    input:
        neurons="results/confidence/{model}/neurons.tsv",
    output:
        png=report(
            "results/figures/confidence/scatter/{model}.png",
            caption="../report/confidence_scatter.rst",
            category="Confidence",
            subcategory="{model}",
        ),
    params:
        selection=confidence_default_selection,
    log:
        "logs/confidence_scatter/{model}.log",
    script:
        "../workflow_scripts/confidence_scatter.py"


rule confidence_venn:
    """Venn diagram of the entropy neurons of a family's 2 or 3 models (Figure 1(d))."""
    input:
        unpack(confidence_family_neurons),
    output:
        png=report(
            "results/figures/confidence/venn/{family}.png",
            caption="../report/confidence_venn.rst",
            category="Confidence",
            subcategory="{family}",
        ),
    params:
        selection=confidence_default_selection,
    wildcard_constraints:
        family="[A-Za-z0-9][A-Za-z0-9._-]*",
    log:
        "logs/confidence_venn/{family}.log",
    script:
        "../workflow_scripts/confidence_venn.py"


rule confidence_iou_figure:
    """IoU of the entropy-neuron sets of a family's model pairs over the (p, n) grid."""
    input:
        unpack(confidence_family_neurons),
    output:
        png=report(
            "results/figures/confidence/iou/{family}.png",
            caption="../report/confidence_iou.rst",
            category="Confidence",
            subcategory="{family}",
        ),
    params:
        pairs=confidence_family_pairs,
        selection=confidence_selection,
    wildcard_constraints:
        family="[A-Za-z0-9][A-Za-z0-9._-]*",
    log:
        "logs/confidence_iou_figure/{family}.log",
    script:
        "../workflow_scripts/confidence_iou_figure.py"


rule confidence_ablation_figure:
    """Entropy and loss change under mean ablation of each entropy neuron, the family's
    models side by side."""
    input:
        unpack(confidence_family_ablations),
    output:
        png=report(
            "results/figures/confidence/ablation/{family}.png",
            caption="../report/confidence_ablation.rst",
            category="Confidence",
            subcategory="{family}",
        ),
    params:
        models=confidence_family_models,
    wildcard_constraints:
        family="[A-Za-z0-9][A-Za-z0-9._-]*",
    log:
        "logs/confidence_ablation_figure/{family}.log",
    script:
        "../workflow_scripts/confidence_ablation_figure.py"
