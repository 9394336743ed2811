# Truthfulness: config, input functions, settings and outputs of rules/truth.smk.

TRUTH = config["truth"]
STEERING = TRUTH["steering"]


def _truth_active():
    """Whether the stage runs. With truth.datasets left to its default, a config whose
    prompt set is missing or holds fewer than two statement datasets (nothing to hold out)
    skips the stage with a warning; explicit settings are checked by _truth_check."""
    if not TRUTH["enabled"]:
        return False
    if TRUTH["datasets"] is None and len(PROMPT_SETS.get(TRUTH["prompt_set"], {}).get("datasets", [])) < 2:
        print(f"truth: skipped (prompt set {TRUTH['prompt_set']!r} does not hold two statement datasets "
              f"to hold out in turn; set truth.datasets, or truth.enabled: false)", file=sys.stderr)
        return False
    return True


def _truth_check():
    """Check the truth section against the rest of the config, naming the culprit key."""
    if not TRUTH_ACTIVE:
        return
    ps = TRUTH["prompt_set"]
    if ps not in PROMPT_SETS:
        raise WorkflowError(
            f"truth.prompt_set: prompt set {ps!r} is not defined under prompt_sets "
            f"(defined: {', '.join(PROMPT_SETS) or 'none'}); set truth.enabled: false to skip this stage"
        )
    if PROMPT_SETS[ps]["kind"] != "statements":
        raise WorkflowError(f"truth.prompt_set: prompt set {ps!r} is of kind {PROMPT_SETS[ps]['kind']!r}, not statements")
    cached = PROMPT_SETS[ps]["datasets"]
    for key, names in (("truth.datasets", truth_datasets()), ("truth.train_datasets", truth_train_datasets())):
        for ds in names:
            if ds not in cached:
                raise WorkflowError(f"{key}: dataset {ds!r} is not one of prompt_sets.{ps}.datasets ({', '.join(cached)})")
    for key, names in (("truth.steering.datasets", steering_datasets()), ("truth.pca_dataset", [pca_dataset()])):
        for ds in names:
            if ds not in truth_datasets():
                raise WorkflowError(f"{key}: dataset {ds!r} must be one of truth.datasets "
                                    f"({', '.join(truth_datasets())}), so that its direction is trained without it")
    if TRUTH["direction_probe"] not in TRUTH["probes"]:
        raise WorkflowError(f"truth.direction_probe: {TRUTH['direction_probe']!r} is not one of truth.probes {TRUTH['probes']}")
    for ds in truth_datasets():
        if not [d for d in truth_train_datasets() if d != ds]:
            raise WorkflowError(f"truth.train_datasets: held out, dataset {ds!r} leaves no dataset to train the "
                                f"probes on ({', '.join(truth_train_datasets())}); add training datasets")
    for ds in truth_all_datasets():
        require_rows(ds, "truth.datasets", true=1, false=1, why="a truth probe trained or tested on it")
    if STEERING["enabled"]:
        n = STEERING["n_demos"]
        for ds in steering_datasets():
            require_rows(ds, "truth.steering.n_demos", true=(n + 1) // 2, false=n // 2, total=n + 1,
                         why=f"{n} demonstrations and a statement left to steer")


def truth_datasets():
    return TRUTH["datasets"] or list(PROMPT_SETS.get(TRUTH["prompt_set"], {}).get("datasets", []))


def truth_train_datasets():
    return TRUTH["train_datasets"] or truth_datasets()


def truth_all_datasets():
    """Held-out datasets first, then training-only ones: the order of a probe job's caches."""
    return truth_datasets() + [d for d in truth_train_datasets() if d not in truth_datasets()]


def steering_datasets():
    if STEERING["datasets"]:
        return STEERING["datasets"]
    names = truth_datasets()
    return ["cities"] if "cities" in names else names[:1]


def pca_dataset():
    return TRUTH["pca_dataset"] or steering_datasets()[0]


def truth_families():
    """family -> its models, in config order."""
    families = {}
    for m, spec in config["models"].items():
        families.setdefault(spec["family"], []).append(m)
    return families


def truth_family_base(family):
    """The model whose sweep and layer overrides fix the family's layers: its base model
    (the first with role base), else its first model."""
    members = truth_families()[family]
    bases = [m for m in members if config["models"][m]["role"] == "base"]
    return (bases or members)[0]


def truth_layers_path(model):
    return f"results/truth/families/{config['models'][model]['family']}/layers.json"


def truth_canonical_pairs():
    """Unordered pairs of model_pairs, the base model (else the earlier in config order) first."""
    order = list(config["models"])
    out = []
    for a, b in ptcfg.model_pairs(config):
        ra, rb = config["models"][a]["role"], config["models"][b]["role"]
        first_a = (ra == "base") if (ra == "base") != (rb == "base") else order.index(a) < order.index(b)
        pair = (a, b) if first_a else (b, a)
        if pair not in out:
            out.append(pair)
    return out


def steering_combinations():
    """(direction source, target model): every model on itself, and each ordered pair's
    source on its target (so every pair gives the paper's four conditions)."""
    combos = [(m, m) for m in MODELS]
    combos += [(a, b) for a, b in ptcfg.model_pairs(config)]
    return combos


def truth_probe_input(wildcards):
    return {"caches": [cache_path(wildcards.model, TRUTH["prompt_set"], ds) for ds in truth_all_datasets()]}


def truth_probe_settings(wildcards):
    return {
        "datasets": truth_datasets(),
        "train_datasets": truth_train_datasets(),
        "cache_datasets": truth_all_datasets(),
        "probes": TRUTH["probes"],
        "lr_probe": TRUTH["lr_probe"],
        "mm_probe": TRUTH["mm_probe"],
    }


def truth_layers_input(wildcards):
    base = truth_family_base(wildcards.family)
    return {"table": f"results/truth/{base}/probes.tsv", "probes": f"results/truth/{base}/probes.npz"}


def truth_layers_settings(wildcards):
    base = truth_family_base(wildcards.family)
    layers = config["models"][base].get("layers", {})
    return {
        "family": wildcards.family,
        "model": base,
        "probe": TRUTH["direction_probe"],
        "probe_layer": layers.get("truth_probe"),
        "intervene_layer": layers.get("truth_intervene"),
        "intervene_fraction": TRUTH["intervene_fraction"],
    }


def truth_heldout_caches(model):
    return [cache_path(model, TRUTH["prompt_set"], ds) for ds in truth_datasets()]


def truth_pair_input(wildcards):
    return {
        "source_probes": f"results/truth/{wildcards.source}/probes.npz",
        "target_probes": f"results/truth/{wildcards.target}/probes.npz",
        "source_caches": truth_heldout_caches(wildcards.source),
        "target_caches": truth_heldout_caches(wildcards.target),
    }


def truth_pair_settings(wildcards):
    return {"datasets": truth_datasets()}


def truth_pca_input(wildcards):
    return {
        "source_cache": cache_path(wildcards.source, TRUTH["prompt_set"], pca_dataset()),
        "target_cache": cache_path(wildcards.target, TRUTH["prompt_set"], pca_dataset()),
        "source_probes": f"results/truth/{wildcards.source}/probes.npz",
        "target_probes": f"results/truth/{wildcards.target}/probes.npz",
        "layers": truth_layers_path(wildcards.target),
    }


def truth_pca_settings(wildcards):
    return {"dataset": pca_dataset(), "probe": TRUTH["direction_probe"]}


def truth_steer_input(wildcards):
    path = config["models"][wildcards.target]["path"]
    return {
        "data": f"results/data/{wildcards.dataset}.tsv",
        "probes": f"results/truth/{wildcards.source}/probes.npz",
        "layers": truth_layers_path(wildcards.target),
        **({"model": path} if ptcfg.is_local_path(path) else {}),
    }


def truth_steer_model(wildcards):
    return ptcfg.extraction_model_spec(config, wildcards.target)


def truth_steer_settings(wildcards):
    return {"probe": TRUTH["direction_probe"], **{k: v for k, v in STEERING.items() if k not in ("enabled", "datasets")}}


def truth_model_info(wildcards=None):
    return {m: {"family": s["family"], "role": s["role"]} for m, s in config["models"].items()}


def truth_pair_info(wildcards=None):
    """The relation of every ordered pair of models that meet in a pair (both orders)."""
    ordered = {p for a, b in ptcfg.model_pairs(config) for p in ((a, b), (b, a))}
    return [{"source": a, "target": b, "direction": ptcfg.direction(config, a, b)} for a, b in sorted(ordered)]


def truth_tables_input(wildcards):
    pairs = truth_canonical_pairs()
    return {
        "probes": [f"results/truth/{m}/probes.tsv" for m in MODELS],
        "layers": [f"results/truth/families/{f}/layers.json" for f in truth_families()],
        "transfer": [f"results/truth/pairs/{a}/{b}/transfer.tsv" for a, b in pairs],
        "cosine": [f"results/truth/pairs/{a}/{b}/cosine.tsv" for a, b in pairs],
    }


def truth_steering_input(wildcards):
    cells = [(t, s, ds) for s, t in steering_combinations() for ds in steering_datasets()]
    return {"tables": [f"results/truth/steering/{t}/{s}/{ds}.tsv" for t, s, ds in cells],
            "summaries": [f"results/truth/steering/{t}/{s}/{ds}.json" for t, s, ds in cells]}


def truth_family_pairs(family):
    return [(a, b) for a, b in truth_canonical_pairs() if config["models"][b]["family"] == family]


def truth_outputs():
    if not TRUTH_ACTIVE:
        return []
    outs = [f"results/tables/truth_{t}.tsv" for t in ("probe_accuracy", "layers", "transfer", "cosine")]
    outs += [f"results/figures/truth/accuracy/{f}.png" for f in truth_families()]
    outs += [f"results/figures/truth/cosine/{f}.png" for f in truth_families() if truth_family_pairs(f)]
    for a, b in truth_canonical_pairs():
        outs += [f"results/figures/truth/transfer/{a}~{b}.png", f"results/figures/truth/pca/{a}~{b}.png"]
    if STEERING["enabled"]:
        outs.append("results/tables/truth_steering.tsv")
        outs += [f"results/figures/truth/steering/{f}.png" for f in truth_families()]
    return outs


TRUTH_ACTIVE = _truth_active()
_truth_check()
STAGE_OUTPUTS.append(truth_outputs)
TRUTH_MODEL = "|".join(map(re.escape, MODELS)) if MODELS else "^$"
TRUTH_FAMILY = "|".join(map(re.escape, truth_families())) if MODELS else "^$"

