# Refusal: the input and params functions of rules/refusal.smk, each a call on the plan
# (PLAN.refusal; Snakemake's linter keeps functions apart from rules).

REFUSAL = PLAN.refusal


def refusal_candidates_input(w):
    return REFUSAL.candidates_input(w.model)


def refusal_candidates_settings(w):
    return REFUSAL.candidates_settings()


def refusal_live_input(w):
    return REFUSAL.live_input(w.model)


def refusal_live_model(w):
    return PLAN.model_spec(w.model)


def refusal_steer_model(w):
    return PLAN.model_spec(w.target)


def refusal_select_input(w):
    return REFUSAL.select_input(w.model)


def refusal_select_settings(w):
    return REFUSAL.select_settings(w.model)


def refusal_generation_settings(w):
    return REFUSAL.generation_settings()


def refusal_steer_input(w):
    return REFUSAL.steer_input(w.source, w.target)


def refusal_steer_settings(w):
    return REFUSAL.steer_settings(w.target)


def refusal_tables_input(w):
    return REFUSAL.tables_input()


def refusal_pca_input(w):
    return REFUSAL.pca_input(w.model)


def refusal_pca_settings(w):
    return REFUSAL.pca_settings()
