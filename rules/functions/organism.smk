# The model organism: the recipe and outputs of rules/organism.smk.

from pathlib import Path

from ptmech.organism import recipe as organism_recipe

# The organism's recipe: the config's `organism:` section over the library's defaults.
ORGANISM = organism_recipe.with_defaults(config.get("organism"))
ORGANISM_MODELS = ["organism-base", "organism-sft", "organism-instruct"]
ORGANISM_DATASETS = ["cities", "neg_cities", "larger_than", "smaller_than", "trans", "neg_trans",
                     "harmful", "harmless"]


def trained_organism(name):
    """Whether the config analyses the organism model ``name`` this workflow trains."""
    spec = config["models"].get(name)
    return spec is not None and Path(spec["path"]) == Path("results", "models", name)


def organism_floors_input(wildcards):
    """The files the floors read: the behaviour checks, and the analyses' outputs of the
    organism that the config runs (the base model's truth layers, the instruct model's
    own refusal direction and its scores)."""
    inputs = {"checks": "results/tables/organism_checks.tsv"}
    if trained_organism("organism-base") and TRUTH_ACTIVE:
        inputs["truth_layers"] = truth_layers_path("organism-base")
    if trained_organism("organism-instruct") and refusal_active():
        inputs["direction"] = "results/refusal/organism-instruct/direction.json"
        inputs["baseline"] = "results/refusal/baseline/organism-instruct.tsv"
        inputs["steering"] = "results/refusal/steering/organism-instruct/organism-instruct.tsv"
    return inputs


def organism_outputs():
    """The organism's final output, built only when the config uses an organism model or
    dataset (a config of real models trains nothing)."""
    organism_paths = {Path("results", "models", o) for o in ORGANISM_MODELS}
    uses_models = any(Path(m.get("path", "")) in organism_paths for m in config["models"].values())
    uses_data = any("organism" in spec for spec in config.get("datasets", {}).values())
    return ["results/tables/organism_floors.tsv"] if uses_models or uses_data else []


STAGE_OUTPUTS.append(organism_outputs)
