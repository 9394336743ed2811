# Confidence: config, input functions, settings and outputs of rules/confidence.smk.

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

