# Refusal: config, input functions, settings and outputs of rules/refusal.smk.

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
        require_rows(ds, f"refusal.{key}", why="directions (train), selection (val) and generation scores (test)",
                     splits={"fractions": REFUSAL["split_fractions"], "seed": REFUSAL["split_seed"]})
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

