# The model organism: the input and params functions of rules/organism.smk, each a call on the plan
# (PLAN.organism; Snakemake's linter keeps functions apart from rules).

ORGANISM = PLAN.organism.recipe
ORGANISM_MODELS = list(ptplan.ORGANISM_MODELS)
ORGANISM_DATASETS = list(ptplan.ORGANISM_DATASETS)


def organism_floors_input(w):
    return PLAN.organism.floors_input()
