"""What a job that loads a model needs (GPUs, memory, run time), estimated from the
model's size, for the ``resources:`` of the rules that load a model (rules/resources.smk);
and ``claim_gpu``, which gives a job of a local run one GPU of its own.

The size is read, in this order of preference, from
1. the model's safetensors files (their headers give every tensor's shape and dtype:
   the exact parameter count, no weights are read), else their size (``*.bin``);
2. its ``config.json`` (an estimate from the layer count, widths and vocabulary);
3. ``default_parameters`` (a hub id that is not in the local hub cache).
A local folder is read directly; a hub id is looked up in the Hugging Face hub cache
(``HF_HOME`` / ``HF_HUB_CACHE``), never on the network.

Whether jobs get a GPU is ``gpu``: ``true``, ``false`` or ``auto``. ``auto`` means a GPU
per model job when the jobs run on a cluster (a non-local executor such as SLURM, and the
job itself running there), else when this machine has a CUDA GPU. The decision must not
depend on the machine that evaluates it (Snakemake re-evaluates resources inside a cluster
job, and the job step's inner ``srun`` asks for the GPUs it computes), so ``auto`` looks at
the executor first; see ``use_gpus``.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

# Settings (config key ``resources``); the schema documents each.
DEFAULTS = {
    "gpu": "auto",                 # auto | true | false
    "gpu_model": "",               # e.g. a100: jobs ask --gpus=a100:N on SLURM
    "gpu_mem_gb": 80,              # memory of one GPU, for models with a device_map
    "default_parameters": 8.0e9,   # size of a model whose size cannot be read
    "runtime_min": 60,             # minutes of a model job, plus ...
    "runtime_min_per_billion": 10,  # ... this many per billion parameters
    "threads": 4,                  # CPU threads of a job that loads a model of at least ...
    "threads_min_parameters": 1.0e7,  # ... this many parameters (smaller: one thread)
    "warm_start": "auto",          # auto | true | false: jobs fork from a warm server (ptmech.warm)
}

DTYPE_BYTES = {
    "float64": 8, "F64": 8, "float32": 4, "float": 4, "F32": 4, "bfloat16": 2, "BF16": 2,
    "float16": 2, "half": 2, "F16": 2, "int8": 1, "I8": 1, "uint8": 1, "U8": 1, "F8_E4M3": 1,
    "F8_E5M2": 1, "int32": 4, "I32": 4, "int64": 8, "I64": 8, "bool": 1, "BOOL": 1,
}
# Host memory (MB) a model job needs besides the weights: Python, torch, tokenizers, and on
# a GPU job the CUDA context and pinned buffers.
OVERHEAD_MB = {"cpu": 2048, "gpu": 4096}
# Weights are held once in the compute dtype; loading (and on the CPU the activations)
# needs this factor more.
WEIGHT_FACTOR = {"cpu": 1.5, "gpu": 1.25}
# Headroom on a GPU for activations and the KV cache when a model is sharded over GPUs.
GPU_HEADROOM = 1.2
# Model types whose MLP has two matrices (up, down) rather than three (gate, up, down).
UNGATED_MLP = {"gpt2", "gpt_neox", "gptj", "gpt_bigcode", "opt", "bloom", "falcon", "phi",
               "bert", "roberta", "mpt", "codegen", "starcoder2"}
# Model types with learned absolute position embeddings.
LEARNED_POSITIONS = {"gpt2", "opt", "gpt_bigcode", "bert", "roberta", "codegen"}


class ResourceSettingsError(ValueError):
    pass


def settings(section: dict | None) -> dict:
    """The ``resources`` config section with defaults filled in and ``gpu`` and
    ``warm_start`` normalised to True / False / "auto"."""
    out = dict(DEFAULTS)
    out.update(section or {})
    unknown = set(out) - set(DEFAULTS)
    if unknown:
        raise ResourceSettingsError(f"resources: unknown key(s) {', '.join(sorted(unknown))}")
    for key in ("gpu", "warm_start"):
        value = out[key]
        if isinstance(value, str):
            value = {"auto": "auto", "true": True, "false": False, "yes": True, "no": False}.get(value.lower())
        if value not in (True, False, "auto"):
            raise ResourceSettingsError(f"resources.{key}: expected true, false or auto, got {out[key]!r}")
        out[key] = value
    out["gpu_model"] = str(out["gpu_model"] or "")
    for key in ("gpu_mem_gb", "default_parameters", "runtime_min", "runtime_min_per_billion",
                "threads_min_parameters"):
        try:
            out[key] = float(out[key])  # also YAML's "8e9", which PyYAML reads as a string
        except (TypeError, ValueError):
            raise ResourceSettingsError(f"resources.{key}: expected a number, got {out[key]!r}") from None
    return out


# --- model size -----------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSize:
    """``parameters``: parameter count; ``source``: where it was read (``safetensors``,
    ``weights`` (file sizes), ``config`` (estimate) or ``default``); ``folder``: the folder
    read (a local folder or a hub cache snapshot), if any."""

    parameters: int
    source: str
    folder: str | None = None


def model_folder(path: str, revision: str | None = None, cache_dir: str | None = None) -> Path | None:
    """The local folder holding the model's files: ``path`` itself when it is a folder,
    else the hub cache snapshot of hub id ``path`` that holds its config.json (None when
    the model is not cached). Never touches the network."""
    from .config import is_local_path

    if is_local_path(path):
        return Path(path) if Path(path).is_dir() else None  # None: not made yet
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - huggingface_hub ships with transformers
        return None
    try:
        found = try_to_load_from_cache(path, "config.json", cache_dir=cache_dir, revision=revision)
    except Exception:  # an id huggingface_hub rejects is simply not cached
        return None
    return Path(found).parent if isinstance(found, str) else None


def safetensors_parameters(files: list[Path]) -> tuple[int, dict[str, int]]:
    """(parameter count, {dtype: parameters}) from the headers of safetensors files: an
    8-byte little-endian header length, then a JSON map tensor -> {dtype, shape, ...}."""
    total, by_dtype = 0, {}
    for f in files:
        with open(f, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n))
        for name, info in header.items():
            if name == "__metadata__":
                continue
            count = math.prod(info["shape"])
            total += count
            by_dtype[info["dtype"]] = by_dtype.get(info["dtype"], 0) + count
    return total, by_dtype


def read_config(folder: Path) -> dict | None:
    try:
        return json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return None


def stored_dtype_bytes(cfg: dict | None) -> int:
    dtype = (cfg or {}).get("dtype") or (cfg or {}).get("torch_dtype") or "float32"
    return DTYPE_BYTES.get(str(dtype).replace("torch.", ""), 4)


def config_value(cfg: dict, *keys: str, default=None):
    """The first of ``keys`` that a config.json sets, read from its language model's part
    (``text_config`` / ``llm_config`` of a multimodal config, else the config itself)."""
    text = cfg.get("text_config") or cfg.get("llm_config") or cfg
    for k in keys:
        if text.get(k) is not None:
            return text[k]
    return default


def config_parameters(cfg: dict) -> int | None:
    """Parameter count estimated from a transformers config.json (decoder-only
    transformers: embeddings, attention and MLP matrices; norms and biases ignored). None
    when the config lacks the widths."""
    text = cfg.get("text_config") or cfg.get("llm_config") or cfg
    model_type = text.get("model_type", cfg.get("model_type", ""))

    def first(*keys, default=None):
        return config_value(cfg, *keys, default=default)

    d = first("hidden_size", "n_embd", "d_model")
    n_layers = first("num_hidden_layers", "n_layer", "num_layers")
    vocab = first("vocab_size")
    if not (d and n_layers and vocab):
        return None
    heads = first("num_attention_heads", "n_head", default=1)
    head_dim = first("head_dim", default=d // heads)
    kv_heads = first("num_key_value_heads", "n_head_kv", default=heads)
    ff = first("intermediate_size", "n_inner", "ffn_dim", default=None) or 4 * d
    attention = 2 * d * heads * head_dim + 2 * d * kv_heads * head_dim
    experts = first("num_local_experts", "num_experts", "n_routed_experts", default=1) or 1
    mlp = (2 if model_type in UNGATED_MLP else 3) * d * ff * experts
    tied = cfg.get("tie_word_embeddings", text.get("tie_word_embeddings", True))
    embeddings = vocab * d * (1 if tied else 2)
    if model_type in LEARNED_POSITIONS:
        embeddings += first("n_positions", "max_position_embeddings", default=0) * d
    return int(n_layers * (attention + mlp) + embeddings)


def model_size(path: str, revision: str | None = None, default_parameters: float = DEFAULTS["default_parameters"],
               cache_dir: str | None = None) -> ModelSize:
    """The size of the model at ``path`` (local folder or hub id); see the module doc."""
    folder = model_folder(path, revision, cache_dir)
    if folder is not None:
        cfg = read_config(folder)
        shards = sorted(folder.glob("*.safetensors"))
        if shards:
            try:
                return ModelSize(safetensors_parameters(shards)[0], "safetensors", str(folder))
            except (OSError, ValueError, KeyError, struct.error):
                pass
        weights = [f for pattern in ("pytorch_model*.bin", "model*.bin", "*.pt", "*.pth")
                   for f in sorted(folder.glob(pattern))]
        if weights:
            size = sum(f.stat().st_size for f in weights)
            return ModelSize(size // stored_dtype_bytes(cfg), "weights", str(folder))
        if cfg is not None:
            n = config_parameters(cfg)
            if n:
                return ModelSize(n, "config", str(folder))
    return ModelSize(int(default_parameters), "default", None)


# --- resources --------------------------------------------------------------------------


def compute_dtype_bytes(dtype: str | None, gpu: bool) -> int:
    """Bytes per parameter in the compute dtype (``auto``: bfloat16 on a GPU, float32 on
    the CPU, as ``ptmech.adapter.resolve_dtype``)."""
    if dtype in (None, "auto"):
        return 2 if gpu else 4
    return DTYPE_BYTES[dtype]


def mem_mb(parameters: int, dtype_bytes: int, gpu: bool, attempt: int = 1) -> int:
    """Host memory (MB) of a job holding one model: a fixed overhead plus the weights in
    the compute dtype times a loading factor, rounded up to a multiple of 256 MB; doubled,
    tripled, ... on retries."""
    kind = "gpu" if gpu else "cpu"
    mb = OVERHEAD_MB[kind] + WEIGHT_FACTOR[kind] * parameters * dtype_bytes / 2**20
    return int(math.ceil(mb / 256) * 256) * max(1, attempt)


def gpu_count(parameters: int, dtype_bytes: int, gpu_mem_gb: float, sharded: bool) -> int:
    """GPUs of a job: one, or for a model sharded with a ``device_map`` as many as its
    weights (plus headroom) need."""
    if not sharded:
        return 1
    return max(1, math.ceil(parameters * dtype_bytes * GPU_HEADROOM / (gpu_mem_gb * 2**30)))


def runtime_min(parameters: int, base: float, per_billion: float, attempt: int = 1) -> int:
    """Wall-clock minutes of a model job: ``base`` + ``per_billion`` per 10^9 parameters,
    times the attempt."""
    return int(math.ceil(base + per_billion * parameters / 1e9)) * max(1, attempt)


def job_threads(size: ModelSize, settings_: dict) -> int:
    """CPU threads of a job that loads a model of ``size``: ``threads`` from
    ``threads_min_parameters`` parameters up, else one (a small model's job is bound by its
    start-up, so several such jobs side by side beat one job with more threads).
    Snakemake lowers it to ``--cores`` where that is smaller, and sets OMP_NUM_THREADS to
    it, which torch follows."""
    return int(settings_["threads"]) if size.parameters >= settings_["threads_min_parameters"] else 1


def job_resources(spec: dict, size: ModelSize, settings_: dict, use_gpu: bool, attempt: int = 1) -> dict:
    """{gpu, gpu_model, mem_mb, runtime} of a job that loads the model of config entry
    ``spec`` (``models.<m>``), of size ``size``."""
    nbytes = compute_dtype_bytes(spec.get("dtype", "auto"), use_gpu)
    gpus = gpu_count(size.parameters, nbytes, settings_["gpu_mem_gb"], bool(spec.get("device_map"))) if use_gpu else 0
    return {
        "gpu": gpus,
        "gpu_model": settings_["gpu_model"] if gpus else "",
        "mem_mb": mem_mb(size.parameters, nbytes, use_gpu, attempt),
        "runtime": runtime_min(size.parameters, settings_["runtime_min"], settings_["runtime_min_per_billion"], attempt),
    }


# --- GPUs of this machine -----------------------------------------------------------------


def visible_gpus(env: dict | None = None) -> list[str] | None:
    """The GPU ids CUDA_VISIBLE_DEVICES lists ([] when it hides all), None when unset."""
    env = os.environ if env is None else env
    value = env.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return None
    ids = [v.strip() for v in value.split(",") if v.strip()]
    if ids and ids[0] in ("-1", "none", "NoDevFiles"):
        return []
    return ids


def local_gpu_count(env: dict | None = None) -> int:
    """CUDA GPUs this process can use, without initialising CUDA: CUDA_VISIBLE_DEVICES
    when set, else the NVIDIA driver's list (/proc/driver/nvidia/gpus, else
    ``nvidia-smi -L``); 0 without a driver."""
    ids = visible_gpus(env)
    if ids is not None:
        return len(ids)
    proc_dir = Path("/proc/driver/nvidia/gpus")
    if proc_dir.is_dir():
        return len(list(proc_dir.iterdir()))
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(line.startswith("GPU ") for line in out.stdout.splitlines()) if out.returncode == 0 else 0


def use_gpus(setting, cluster: bool, local_gpus: int) -> bool:
    """Whether model jobs get GPUs: ``setting`` True / False, or ``auto``: when the jobs
    run on a cluster (``cluster``: a non-local executor, or this process is a job running
    there), else when this machine has a GPU (``local_gpus`` > 0)."""
    if setting == "auto":
        return bool(cluster or local_gpus > 0)
    return bool(setting)


def use_warm_start(setting, remote: bool, gpus: bool, platform: str) -> bool:
    """Whether this Snakemake's jobs start warm (``ptmech.warm``): ``setting`` True / False,
    or ``auto``: when the jobs run on this machine (not ``remote``: inside a cluster job,
    whose node runs one job and would start a server for it alone), get no GPU (a process
    must not fork once CUDA has started, and a GPU job's start-up is a small part of it) and
    the platform is Linux (fork-safe with torch)."""
    if setting == "auto":
        return not remote and not gpus and platform.startswith("linux")
    return bool(setting)


_CLAIMED: list = []  # open lock files: a claim lasts as long as the process


def claim_gpu(env: dict | None = None, lock_dir: str | os.PathLike | None = None, n_gpus: int | None = None,
              block: bool = True) -> str | None:
    """Give this process one GPU of its own in a local run, and return its id.

    A batch scheduler (SLURM) gives a job its GPUs through CUDA_VISIBLE_DEVICES; Snakemake
    running jobs on one machine gives none, so every job would use the first GPU. When
    CUDA_VISIBLE_DEVICES is unset, no scheduler job is running (SLURM_JOB_ID unset) and
    the machine has several GPUs, this takes an exclusive lock on one GPU (a lock file per
    GPU in ``lock_dir``, held until the process exits, also when it crashes), waiting for
    one when all are taken, and sets CUDA_VISIBLE_DEVICES to it. Call it before CUDA is
    initialised (before ``torch.cuda.is_available()``). Returns None, changing nothing,
    when there is nothing to choose."""
    env = os.environ if env is None else env
    if visible_gpus(env) is not None or "SLURM_JOB_ID" in env:
        return None
    n = local_gpu_count(env) if n_gpus is None else n_gpus
    if n <= 1:
        return None
    lock_dir = Path(lock_dir or Path(tempfile.gettempdir()) / f"ptmech-gpu-locks-{os.getuid()}")
    lock_dir.mkdir(parents=True, exist_ok=True)
    start = os.getpid() % n  # spread waiting jobs over the GPUs
    for flags in ([fcntl.LOCK_EX | fcntl.LOCK_NB] + ([fcntl.LOCK_EX] if block else [])):
        for i in [(start + j) % n for j in range(n)] if flags & fcntl.LOCK_NB else [start]:
            fh = open(lock_dir / f"gpu{i}.lock", "a")
            try:
                fcntl.flock(fh, flags)
            except BlockingIOError:
                fh.close()
                continue
            _CLAIMED.append(fh)
            env["CUDA_VISIBLE_DEVICES"] = str(i)
            return str(i)
    return None
