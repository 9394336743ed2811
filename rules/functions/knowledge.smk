# Knowledge: the input and params functions of rules/knowledge.smk, each a call on the plan
# (PLAN.knowledge; Snakemake's linter keeps functions apart from rules).

KNOWLEDGE = PLAN.knowledge


def knowledge_pairs_input(w):
    return KNOWLEDGE.pairs_input(w.family, w.dataset)


def knowledge_pairs_tokenizer(w):
    return KNOWLEDGE.pairs_tokenizer(w.family)


def knowledge_pairs_settings(w):
    return KNOWLEDGE.pairs_settings(w.dataset)


def knowledge_sources_input(w):
    return KNOWLEDGE.sources_input(w.model, w.dataset)


def knowledge_source_model(w):
    return KNOWLEDGE.model(w.model)


def knowledge_target_model(w):
    return KNOWLEDGE.model(w.target)


def knowledge_sources_settings(w):
    return KNOWLEDGE.sources_settings()


def knowledge_patch_input(w):
    return KNOWLEDGE.patch_input(w.source, w.target, w.dataset)


def knowledge_patch_settings(w):
    return KNOWLEDGE.patch_settings(w.source, w.target)


def knowledge_tables_input(w):
    return KNOWLEDGE.tables_input()


def knowledge_tables_settings(w):
    return KNOWLEDGE.tables_settings()


def knowledge_figure_models(w):
    return PLAN.families()[w.family]
