# Truthfulness: the input and params functions of rules/truth.smk, each a call on the plan
# (PLAN.truth; Snakemake's linter keeps functions apart from rules).

TRUTH = PLAN.truth


def truth_probe_input(w):
    return TRUTH.probe_input(w.model)


def truth_probe_settings(w):
    return TRUTH.probe_settings()


def truth_layers_input(w):
    return TRUTH.layers_input(w.family)


def truth_layers_settings(w):
    return TRUTH.layers_settings(w.family)


def truth_pair_input(w):
    return TRUTH.pair_input(w.source, w.target)


def truth_pair_settings(w):
    return TRUTH.pair_settings()


def truth_pca_input(w):
    return TRUTH.pca_input(w.source, w.target)


def truth_pca_settings(w):
    return TRUTH.pca_settings()


def truth_steer_input(w):
    return TRUTH.steer_input(w.source, w.target, w.dataset)


def truth_steer_model(w):
    return PLAN.model_spec(w.target)


def truth_steer_settings(w):
    return TRUTH.steer_settings()


def truth_tables_input(w):
    return TRUTH.tables_input()


def truth_steering_input(w):
    return TRUTH.steering_input()
