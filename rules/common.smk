# Config loading and validation, wildcard constraints, and every input / params function.
# Rules only name things; the logic lives here and in the ptmech library.

import os
import sys
from pathlib import Path

from snakemake.utils import validate

LIBRARY = str(Path(workflow.basedir).resolve() / "workflow_scripts")
sys.path.insert(0, LIBRARY)
# Rule scripts run in Python processes of their own, where Snakemake puts the script's folder
# after site-packages; PYTHONPATH comes before it, so they too import this workflow's ptmech
# rather than whichever copy is installed (another clone's, an older release).
# (It sets the variable, so envvars:, which declares variables a run needs, does not apply.)
os.environ.update(PYTHONPATH=os.pathsep.join(
    [LIBRARY] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != LIBRARY]))
from ptmech import config as ptcfg


SCHEMA = str(Path(workflow.basedir) / "config.schema.yaml")
_problem = ptcfg.schema_errors(config, SCHEMA)
if _problem:
    raise WorkflowError(f"invalid config: {_problem}")
validate(config, SCHEMA)  # fills in the schema's defaults
# Sorted keys and one spelling of each number, so that params (compared as written) change
# only when the config's meaning does.
_canonical = ptcfg.canonical(config)
config.clear()
config.update(_canonical)
try:
    # local datasets, read and normalised (name -> table), for the stages' size checks; a
    # job's own parse (on a cluster node) knows their names but reads none of them again
    LOCAL_DATASETS = ptcfg.check(config, dry_run=ptcfg.is_dry_run(sys.argv[1:]), warn=lambda m: print(m, file=sys.stderr),
                                 read_data=workflow.is_main_process)
except ptcfg.ConfigError as e:
    raise WorkflowError(f"invalid config: {e}") from None



# dataset -> what the stages need of it ({key, true, false, total, splits, why}): checked here
# for local files, by rule dataset_sized for datasets a rule makes or the hub gives.
DATASET_NEEDS = {}


def require_rows(dataset, key, **need):
    """Record that setting ``key`` needs rows of ``dataset``; fail the parse naming it when
    a local dataset is too small."""
    DATASET_NEEDS.setdefault(dataset, []).append({"key": key, **need})
    try:
        ptcfg.require_rows(LOCAL_DATASETS, dataset, key, **need)
    except ptcfg.ConfigError as e:
        raise WorkflowError(f"invalid config: {e}") from None


MODELS = list(config["models"])
PROMPT_SETS = config["prompt_sets"]


wildcard_constraints:
    model="|".join(map(re.escape, MODELS)) if MODELS else "^$",
    dataset="[A-Za-z0-9][A-Za-z0-9._-]*",
    prompt_set="[A-Za-z0-9][A-Za-z0-9._-]*",


def cache_path(model, prompt_set, dataset):
    return f"results/activations/{model}/{prompt_set}/{dataset}.h5"


def all_caches():
    return [
        cache_path(m, ps, ds)
        for m in MODELS
        for ps, spec in PROMPT_SETS.items()
        for ds in spec["datasets"]
    ]


# Each stage's rules/<stage>.smk appends a function returning its final outputs.
STAGE_OUTPUTS = []


def all_outputs():
    return list(all_caches()) + all_outputs_of_stages()


def all_outputs_of_stages():
    return [out for stage_outputs in STAGE_OUTPUTS for out in stage_outputs()]


# --- data -----------------------------------------------------------------------------


def dataset_input(wildcards):
    spec = config["datasets"][wildcards.dataset]
    path = ptcfg.dataset_file(spec)
    return {"source": path} if path else {}


def dataset_spec(wildcards):
    return config["datasets"][wildcards.dataset]


# --- activations ----------------------------------------------------------------------


def model_input(wildcards):
    """The model's local folder when it is one (so Snakemake builds it first if a rule
    makes it); nothing for hub ids."""
    path = config["models"][wildcards.model]["path"]
    return {"model": path} if ptcfg.is_local_path(path) else {}


def sized_input(wildcards):
    """A dataset the parse could not size (made by a rule, or from the hub) is sized by rule
    dataset_sized before anything expensive reads it. ancient(): a changed need reruns the
    check, and only the jobs whose own settings changed rerun after it."""
    ds = wildcards.dataset
    return {"sized": ancient(f"results/data/{ds}.sized")} if ds in DATASET_NEEDS and ds not in LOCAL_DATASETS else {}


def dataset_needs(wildcards):
    return DATASET_NEEDS.get(wildcards.dataset, [])


def extract_input(wildcards):
    return {"data": f"results/data/{wildcards.dataset}.tsv", **sized_input(wildcards), **model_input(wildcards)}


def extraction_model(wildcards):
    return ptcfg.extraction_model_spec(config, wildcards.model)


def extraction_prompt_set(wildcards):
    return ptcfg.prompt_set_spec(config, wildcards.prompt_set)


def extraction_settings(wildcards):
    settings = dict(config.get("extraction", {}))
    batch = config["models"][wildcards.model].get("batch_size")
    if batch:
        settings["batch_size"] = batch
    return settings
