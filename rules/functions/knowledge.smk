# Knowledge: config, input functions, settings and outputs of rules/knowledge.smk.

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
            skeletons = statement_pairs.skeletons_for(ds, KNOWLEDGE["skeletons"])
        except statement_pairs.PairsError as e:
            raise WorkflowError(f"invalid config: {e}") from None
        if LOCAL_DATASETS.get(ds) is not None:
            try:
                statement_pairs.require_match(ds, LOCAL_DATASETS[ds]["statement"].tolist(), skeletons)
            except statement_pairs.PairsError as e:
                raise WorkflowError(f"invalid config: knowledge.skeletons.{ds}: {e}") from None
        question = KNOWLEDGE["queries"].get(ds, KNOWLEDGE["query"]) == "question"  # completions show no FALSE demo
        require_rows(ds, "knowledge.n_true_demos", true=KNOWLEDGE["n_true_demos"] + 1,
                     false=(KNOWLEDGE["n_false_demos"] if question else 0) + 1,
                     why="a pair (one true, one false) and demonstrations other than the pair "
                         "(knowledge.n_true_demos, knowledge.n_false_demos)")
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

