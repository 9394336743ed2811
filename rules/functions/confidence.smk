# Confidence: the input and params functions of rules/confidence.smk, each a call on the plan
# (PLAN.confidence; Snakemake's linter keeps functions apart from rules).

CONFIDENCE = PLAN.confidence


def confidence_model(w):
    return CONFIDENCE.model(w.model)


def confidence_weights_settings(w):
    return CONFIDENCE.weights_settings()


def confidence_selection(w):
    return CONFIDENCE.selection()


def confidence_default_selection(w):
    return CONFIDENCE.default_selection()


def confidence_ablation_input(w):
    return CONFIDENCE.ablation_input(w.model)


def confidence_ablation_settings(w):
    return CONFIDENCE.ablation_settings()


def confidence_family_meta(w):
    return PLAN.model_info(PLAN.families()[w.family])


def confidence_pairs(w):
    return CONFIDENCE.pairs()


def confidence_family_pairs(w):
    return CONFIDENCE.pairs(w.family)


def confidence_all_neurons(w):
    return CONFIDENCE.neurons()


def confidence_family_neurons(w):
    return CONFIDENCE.neurons(w.family)


def confidence_all_ablations(w):
    return CONFIDENCE.ablations()


def confidence_family_ablations(w):
    return CONFIDENCE.ablations(w.family)
