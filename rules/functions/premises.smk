# Premises: the tables whose rows carry a `premise` column (input of rules/premises.smk).


PREMISE_TABLES = {  # table -> (stage, key columns naming the rows)
    "refusal_scores": ("refusal", ["target", "source", "operation"]),
    "refusal_selection": ("refusal", ["model"]),
    "knowledge_baselines": ("knowledge", ["dataset", "source", "target"]),
    "confidence_entropy_neurons": ("confidence", ["model"]),  # each (p, n) of the grid is in the table
}


_STAGE_TABLES = set(all_outputs_of_stages())  # the stages' outputs, before this one's
PREMISES_INPUT = {name: f"results/tables/{name}.tsv" for name in PREMISE_TABLES
                  if f"results/tables/{name}.tsv" in _STAGE_TABLES}


def premises_outputs():
    return ["results/tables/premises.tsv"] if PREMISES_INPUT else []


STAGE_OUTPUTS.append(premises_outputs)
