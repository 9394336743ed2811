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
from ptmech import plan as ptplan


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


# The plan (ptmech.plan): what each stage runs over, its switches and cross-key checks,
# the files rules hand each other, and each rule's inputs and settings. The input functions
# of rules/functions/*.smk only ask it.
try:
    PLAN = ptplan.Plan(config, LOCAL_DATASETS, warn=lambda m: print(m, file=sys.stderr))
except ptplan.PlanError as e:
    raise WorkflowError(f"invalid config: {e}") from None


def _alternatives(names):
    """A wildcard constraint that matches exactly these names."""
    return "|".join(map(re.escape, names)) if names else "^$"


MODEL_NAMES = _alternatives(PLAN.models)
FAMILY_NAMES = _alternatives(PLAN.families())


wildcard_constraints:
    model=MODEL_NAMES,
    dataset="[A-Za-z0-9][A-Za-z0-9._-]*",
    prompt_set="[A-Za-z0-9][A-Za-z0-9._-]*",


def model_info(w):
    """model -> family and role, for the tables that label their rows."""
    return PLAN.model_info()


def pair_info(w):
    return PLAN.pair_info()


def unordered_pairs(w):
    return [list(p) for p in PLAN.unordered_pairs()]


# --- data ---------------------------------------------------------------------------


def dataset_input(wildcards):
    path = ptcfg.dataset_file(config["datasets"][wildcards.dataset])
    return {"source": path} if path else {}


def dataset_spec(wildcards):
    return config["datasets"][wildcards.dataset]


def dataset_needs(wildcards):
    return PLAN.needs.get(wildcards.dataset, [])


# --- activations ----------------------------------------------------------------------


def model_input(wildcards):
    return PLAN.model_folder(wildcards.model)


def sized_input(wildcards):
    """ancient(): a changed need reruns the check, and only the jobs whose own settings
    changed rerun after it."""
    ds = wildcards.dataset
    return {"sized": ancient(ptplan.path("sized", dataset=ds))} if PLAN.needs_sizing(ds) else {}


def extract_input(wildcards):
    return {"data": ptplan.path("data", dataset=wildcards.dataset), **sized_input(wildcards), **model_input(wildcards)}


def extraction_model(wildcards):
    return PLAN.model_spec(wildcards.model)


def extraction_prompt_set(wildcards):
    return ptcfg.prompt_set_spec(config, wildcards.prompt_set)


def extraction_settings(wildcards):
    return PLAN.extraction_settings(wildcards.model)
