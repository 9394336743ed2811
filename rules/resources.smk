# Resources of the jobs that load a model: GPUs (gpu, gpu_model), host memory (mem_mb) and
# run time (runtime, minutes), estimated from the model's size by ptmech.resources. A rule
# whose job loads a model declares
#
#     threads: model_threads
#     resources:
#         gpu=model_gpu,
#         gpu_model=model_gpu_model,
#         mem_mb=model_mem_mb,
#         runtime=model_runtime,
#
# The model is the one named by the job's `model` wildcard, else by its `target` wildcard
# (pair jobs load their target model). Cache-only analyses, tables and figures declare
# none (the profile's default-resources apply to them).
#
# Whether model jobs get a GPU is config `resources.gpu` (auto | true | false; auto: when
# the jobs run on a cluster such as SLURM, else when this machine has a CUDA GPU). On SLURM
# the executor plugin turns gpu / gpu_model into --gpus=[model:]N; locally
# `--resources gpu=N` caps how many GPU jobs run at once.

import functools

from ptmech import resources as ptres
from ptmech import warm as ptwarm


RESOURCES = ptres.settings(config.get("resources"))


def loaded_model(wildcards):
    """The config name of the model a job loads: its `model` wildcard, else `target`."""
    name = getattr(wildcards, "model", None) or getattr(wildcards, "target", None)
    if name is None:
        raise WorkflowError("model resources need a `model` or `target` wildcard")
    return name


@functools.lru_cache(maxsize=None)
def _local_gpu_count():
    return ptres.local_gpu_count()


def jobs_use_gpus():
    """Whether model jobs get GPUs (evaluated per job: on a cluster, the submitting
    Snakemake and the job's own Snakemake must agree, and both see a cluster executor)."""
    cluster = workflow.non_local_exec or workflow.remote_exec
    setting = RESOURCES["gpu"]
    local = _local_gpu_count() if setting == "auto" and not cluster else 0
    return ptres.use_gpus(setting, cluster, local)


_SIZES = {}


def loaded_model_size(wildcards):
    """ptres.ModelSize of the job's model. A folder this workflow has not made yet (the
    organism) counts as empty; Snakemake re-evaluates resources when a job's input exists."""
    spec = config["models"][loaded_model(wildcards)]
    key = (spec["path"], spec.get("revision"))
    if key not in _SIZES:
        if ptcfg.is_local_path(spec["path"]) and not Path(spec["path"]).is_dir():
            return ptres.ModelSize(0, "missing")
        _SIZES[key] = ptres.model_size(spec["path"], spec.get("revision"), RESOURCES["default_parameters"])
    return _SIZES[key]


def model_job_resources(wildcards, attempt=1):
    spec = config["models"][loaded_model(wildcards)]
    return ptres.job_resources(spec, loaded_model_size(wildcards), RESOURCES, jobs_use_gpus(), attempt)


def model_gpu(wildcards):
    return model_job_resources(wildcards)["gpu"]


def model_gpu_model(wildcards):
    return model_job_resources(wildcards)["gpu_model"]


def model_mem_mb(wildcards, attempt):
    return model_job_resources(wildcards, attempt)["mem_mb"]


def model_runtime(wildcards, attempt):
    return model_job_resources(wildcards, attempt)["runtime"]


def model_threads(wildcards):
    return ptres.job_threads(loaded_model_size(wildcards), RESOURCES)


# Warm starts (ptmech.warm; config resources.warm_start): a job's script hands itself to a
# child forked from a server that has already imported torch and transformers. Jobs inherit
# this Snakemake's environment, so the switch travels to their scripts as PTMECH_WARM_START.
# It is decided by the Snakemake that runs the scripts: a cluster job's own Snakemake
# (remote_exec) turns it off for the script it runs.
os.environ[ptwarm.ENABLE] = "1" if ptres.use_warm_start(
    RESOURCES["warm_start"], workflow.remote_exec, jobs_use_gpus(), sys.platform
) else "0"
