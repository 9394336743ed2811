"""Checks on the configuration that JSON Schema cannot express (references between
sections, files that must exist), and the slices of it that each job receives."""

from __future__ import annotations

import functools
import itertools
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

ORGANISM_DATA = "results/organism/data/{name}.csv"
WORKFLOW_OUTPUTS = "results/"


class ConfigError(ValueError):
    pass


def is_local_path(path: str) -> bool:
    """A model path is local if it exists, or is absolute / explicitly relative, or lies
    under results/ (made by this workflow); anything else is a hub id."""
    return (os.path.isabs(path) or path.startswith(("./", "../", WORKFLOW_OUTPUTS))
            or Path(path).exists())


def dataset_file(spec: dict) -> str | None:
    """The local file a dataset is read from (None for hub datasets)."""
    if "organism" in spec:
        return ORGANISM_DATA.format(name=spec["organism"])
    return spec.get("path")


def schema_errors(config: dict, schema_path: str) -> str | None:
    """One line naming the config key of the most relevant schema violation (Snakemake's
    own validation message prints the whole sub-schema), or None if the config is valid."""
    import jsonschema
    import yaml

    with open(schema_path) as f:
        schema = yaml.safe_load(f)
    validator = jsonschema.Draft202012Validator(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(config))
    if error is None:
        return None
    key = ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in error.absolute_path)
    return f"config key {key.replace('.[', '[') or '(top level)'}: {error.message}"


# Top-level maps whose order means something: models of a family are compared and drawn in
# config order, datasets and prompt sets are listed in it.
ORDERED_SECTIONS = ("models", "datasets", "prompt_sets")


def canonical(value, _top: bool = True):
    """``value`` (the validated config) with every mapping's keys sorted, except the order of
    the entries of ``ORDERED_SECTIONS``, and integral floats as ints (``1.0`` -> ``1``).
    Snakemake compares a job's params by their ``repr``, so without this a config rewritten
    without changing its meaning (keys reordered, ``1`` for ``1.0``) reruns every job."""
    if isinstance(value, dict):
        keys = list(value) if not _top else sorted(value)
        out = {}
        for key in keys:
            item = value[key]
            if _top and key in ORDERED_SECTIONS and isinstance(item, dict):
                out[key] = {name: canonical(entry, False) for name, entry in item.items()}
            else:
                out[key] = canonical(item, False)
        return out if _top else {k: out[k] for k in sorted(out, key=str)}
    if isinstance(value, (list, tuple)):
        return [canonical(v, False) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def schema_defaults(schema_path: str, section: str) -> dict:
    """The defaults of one config section as the schema at ``schema_path`` gives them
    (nested objects filled recursively)."""
    import yaml

    with open(schema_path) as f:
        props = yaml.safe_load(f)["properties"][section]["properties"]

    def fill(props):
        return {k: (fill(v["properties"]) if v.get("type") == "object" and "properties" in v else v.get("default"))
                for k, v in props.items()}

    return fill(props)


def offline() -> bool:
    """Whether the hub may not be reached (HF_HUB_OFFLINE or HF_DATASETS_OFFLINE set)."""
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on") for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def hub_dataset_problem(key: str, repo_id: str) -> str | None:
    """Why the hub dataset ``repo_id`` cannot be loaded here, or None: offline, its files
    must be in the hub cache or its prepared tables in the datasets cache (the two places
    ``datasets.load_dataset`` reads offline)."""
    if not offline():
        return None
    from huggingface_hub import constants

    hub = Path(constants.HF_HUB_CACHE) / f"datasets--{repo_id.replace('/', '--')}"
    home = os.environ.get("HF_HOME", os.path.join(os.path.expanduser("~"), ".cache", "huggingface"))
    prepared = Path(os.environ.get("HF_DATASETS_CACHE", os.path.join(home, "datasets"))) / repo_id.replace("/", "___")
    if hub.is_dir() or prepared.is_dir():
        return None
    return (f"{key}: hub dataset {repo_id!r} is in neither the hub cache ({hub.parent}) nor the datasets cache "
            f"({prepared.parent}), and offline (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE) nothing is downloaded; "
            f"download it first (hf download --repo-type dataset {repo_id}) or give a local file as path")


def hub_model_problem(key: str, repo_id: str) -> str | None:
    """Why the hub model ``repo_id`` cannot be loaded here, or None: with
    ``HF_HUB_OFFLINE=1`` it must be in the local hub cache (its config.json at least)."""
    if not offline():
        return None  # it is downloaded by the job that first loads it
    from huggingface_hub import constants, try_to_load_from_cache

    if isinstance(try_to_load_from_cache(repo_id, "config.json"), str):
        return None
    return (f"{key}: {repo_id!r} is not a local folder, and no hub model of that id is in the hub cache "
            f"({constants.HF_HUB_CACHE}), which HF_HUB_OFFLINE=1 allows no download into; download it "
            f"first (hf download {repo_id}) or give the path of a local folder")


def is_dry_run(argv: list[str]) -> bool:
    """Whether a snakemake command line asks for a dry run (``-n``, ``--dry-run``, ``-np``
    ...). Snakemake decides this after the Snakefile is parsed, so the parse reads its
    command line; -n is the only single-letter option with an n."""
    return any(a in ("--dry-run", "--dryrun") or (a.startswith("-") and not a.startswith("--") and "n" in a[1:])
               for a in argv)


def has_chat_template(folder: Path) -> bool:
    """Whether a model folder's tokenizer has a chat template (a chat_template.jinja / .json
    file, or the key in tokenizer_config.json). True when no tokenizer_config.json is there to
    say (a hub snapshot that has only config.json yet): unknown is not an error."""
    if any((folder / f).is_file() for f in ("chat_template.jinja", "chat_template.json")):
        return True
    tok_cfg = folder / "tokenizer_config.json"
    if not tok_cfg.is_file():
        return True
    import json

    return bool(json.loads(tok_cfg.read_text()).get("chat_template"))


@functools.lru_cache(maxsize=None)
def layout_problem(folder: Path) -> str:
    """Why ptmech cannot read the model in ``folder`` (an architecture without a row in
    ``ARCHITECTURES``), or "": its ``*ForCausalLM`` is built from config.json on the meta
    device (no weights, no memory) and its layout discovered (``architectures.discover``).
    Imports torch and transformers, so only models off the table pay for it."""
    import torch
    import transformers

    from .architectures import UnsupportedArchitecture, discover

    try:
        config = transformers.AutoConfig.from_pretrained(folder)
    except (ValueError, KeyError, OSError) as e:
        return f"transformers cannot read its config ({e})"
    if getattr(config, "is_encoder_decoder", False):
        return "an encoder-decoder model; ptmech reads decoder-only models"
    try:
        with torch.device("meta"):
            model = transformers.AutoModelForCausalLM.from_config(config)
    except (ValueError, KeyError, TypeError, ImportError) as e:
        return f"transformers has no causal LM for it ({str(e).splitlines()[0][:200]})"
    try:
        discover(model)
    except UnsupportedArchitecture as e:
        return str(e).split(": ", 1)[-1] + " (a row in ptmech.architectures.ARCHITECTURES can say where they are)"
    return ""


# models.<m>.layers: key -> (lowest k, highest k, what k is there) for a model of L blocks
LAYER_RANGES = {
    "truth_probe": lambda L: (1, L, "the probe reads the output of block k - 1"),
    "truth_intervene": lambda L: (1, L, "steering adds to the outputs of blocks k - 1 .. truth_probe - 1"),
    "refusal": lambda L: (0, L - 1, "the refusal direction is read and added at the input of block k"),
}


def check_model(name: str, spec: dict, prompt_sets: dict) -> None:
    """What the model's config.json says against the config: a transformers model folder,
    an architecture the adapter supports, a chat template (or models.<m>.template) for a
    post-trained local model when instructions are rendered, ``models.<m>.layers`` (residual
    indices k) within the model's (LAYER_RANGES) and cached residual indices within 0..L."""
    from .architectures import ARCHITECTURES
    from .resources import config_value, model_folder, read_config

    path, key = spec["path"], f"models.{name}.path"
    folder = model_folder(path, spec.get("revision"))  # a hub snapshot only when it holds config.json
    if folder is None:
        return  # a hub model not downloaded yet, or a model this workflow has yet to train
    cfg = read_config(folder)
    if cfg is None:
        raise ConfigError(f"{key}: folder {path!r} has no config.json (or one that is not JSON), so it is not a "
                          f"transformers model folder (save one with model.save_pretrained(folder))")
    if cfg.get("model_type") not in ARCHITECTURES:
        problem = layout_problem(folder)
        if problem:
            raise ConfigError(f"{key}: model {name!r} ({folder / 'config.json'}, architecture "
                              f"{cfg.get('model_type')!r}): {problem}")
    uses_instructions = any(ps["kind"] == "instructions" for ps in prompt_sets.values())
    local = is_local_path(path)  # a hub snapshot may hold only some of the tokenizer's files
    if (uses_instructions and local and spec["role"] != "base" and not spec.get("template")
            and not has_chat_template(folder)):
        raise ConfigError(f"models.{name}.template: model {name!r} (role {spec['role']!r}) has no chat template in "
                          f"{folder} and no template is given; give models.{name}.template, e.g. "
                          f"\"<|user|>\\n{{instruction}}\\n<|assistant|>\\n\"")
    n = config_value(cfg, "num_hidden_layers", "n_layer", "num_layers")
    if n is None:
        return
    for layer_key, value in (spec.get("layers") or {}).items():
        low, high, what = LAYER_RANGES[layer_key](n)
        if not low <= value <= high:
            raise ConfigError(f"models.{name}.layers.{layer_key}: k = {value} is outside {low}..{high} for model "
                              f"{name!r}, which has {n} blocks ({what})")
    for ps_name, ps in prompt_sets.items():
        layers = ps.get("layers", "all")
        past = [k for k in (layers if isinstance(layers, list) else []) if k > n]
        if past:
            raise ConfigError(f"prompt_sets.{ps_name}.layers: residual index {past[0]} is past model {name!r}, "
                              f"whose residual stream has k = 0..{n} ({n} blocks)")


def check_gguf(name: str, spec: dict) -> None:
    """A ``models.<m>.gguf`` source: a GGUF file that exists, of an architecture transformers
    converts and ptmech reads, the conversion's packages installed, and ``path`` a folder
    this workflow writes."""
    import importlib.util

    key, file = f"models.{name}.gguf", spec["gguf"]
    if not spec["path"].startswith(WORKFLOW_OUTPUTS):
        raise ConfigError(f"models.{name}.path: {spec['path']!r} must be a folder under {WORKFLOW_OUTPUTS} "
                          f"(rule model_from_gguf writes the converted model there), e.g. "
                          f"{WORKFLOW_OUTPUTS}models/{name}")
    missing = [m for m in ("gguf", "accelerate") if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(f"{key}: converting a GGUF file needs the {' and '.join(missing)} package"
                          f"{'s' if len(missing) > 1 else ''}: pip install \".[gguf]\" -c constraints.txt")
    if not Path(file).is_file():
        raise ConfigError(f"{key}: GGUF file {file!r} does not exist")
    from .gguf import GGUFError, read_architecture, supported_architectures

    try:
        arch = read_architecture(file)
    except (GGUFError, OSError) as e:
        raise ConfigError(f"{key}: {e}") from None
    convertible = supported_architectures()
    if arch not in convertible:
        raise ConfigError(f"{key}: {file!r} holds a {arch!r} model, which transformers' GGUF loader does not "
                          f"convert (it converts {', '.join(sorted(convertible))})")
    if arch in ("t5", "umt5", "mamba"):
        raise ConfigError(f"{key}: {file!r} holds a {arch!r} model; ptmech reads decoder-only transformers")


def gguf_folders(config: dict) -> dict[str, str]:
    """Folder -> model name of every model converted from a GGUF file."""
    return {str(Path(spec["path"])): name for name, spec in config["models"].items() if "gguf" in spec}


def is_local_dataset(spec: dict) -> bool:
    """A dataset read from a file the user gives (not one this workflow makes, nor the hub)."""
    return bool(spec.get("path")) and not spec["path"].startswith(WORKFLOW_OUTPUTS)


def local_dataset(name: str, spec: dict) -> pd.DataFrame:
    """A local dataset file read and normalised as the dataset job will, so that a bad file
    fails the dry run naming its key."""
    from .data import DatasetError, normalise, read_source

    path = spec["path"]
    if not Path(path).is_file():
        raise ConfigError(f"datasets.{name}.path: file {path!r} does not exist")
    try:
        return normalise(name, read_source(name, spec, path), spec, path)
    except DatasetError as e:
        raise ConfigError(f"datasets.{name}: {e}") from None


def check(config: dict, dry_run: bool = False, warn=print, read_data: bool = True) -> dict:
    """Raise one ConfigError naming the offending key for each kind of bad reference. A hub
    model that cannot be loaded offline is an error for a real run and a warning (``warn``)
    for a dry run, which loads no weights. Returns the local datasets, normalised
    (name -> table), for the stages' size checks (``require_rows``); with ``read_data``
    false (a job's own parse of the workflow, after the main one checked them) the names
    map to None and no file is read."""
    models, datasets = config["models"], config["datasets"]
    for name, spec in models.items():
        path, key = spec["path"], f"models.{name}.path"
        if "gguf" in spec:
            check_gguf(name, spec)  # then its folder, once rule model_from_gguf has made it
        if is_local_path(path) and not path.startswith(WORKFLOW_OUTPUTS) and not Path(path).is_dir():
            raise ConfigError(f"{key}: local model folder {path!r} does not exist")
        if not is_local_path(path):
            top = Path(path).parts[0]
            if Path(top).is_dir():
                raise ConfigError(f"{key}: local model folder {path!r} does not exist (there is a folder "
                                  f"{top!r} here, so it is not read as a hub id; write ./{path} for a folder)")
            problem = hub_model_problem(key, path)
            if problem and not dry_run:
                raise ConfigError(problem)
            if problem:
                warn(f"warning: {problem} (a real run stops here)")
        check_model(name, spec, config["prompt_sets"])
    tables = {}
    for name, spec in datasets.items():
        problem = hub_dataset_problem(f"datasets.{name}.hub", spec["hub"]) if "hub" in spec else None
        if problem and not dry_run:
            raise ConfigError(problem)
        if problem:
            warn(f"warning: {problem} (a real run stops here)")
        if is_local_dataset(spec):
            tables[name] = local_dataset(name, spec) if read_data else None
    for ps_name, ps in config["prompt_sets"].items():
        for ds in ps["datasets"]:
            if ds not in datasets:
                raise ConfigError(f"prompt_sets.{ps_name}.datasets: dataset {ds!r} is not defined "
                                  f"under datasets (defined: {', '.join(datasets) or 'none'})")
            if datasets[ds]["kind"] != ps["kind"]:
                raise ConfigError(f"prompt_sets.{ps_name}.datasets: dataset {ds!r} is of kind "
                                  f"{datasets[ds]['kind']!r}, the prompt set takes {ps['kind']!r}")
    for i, pair in enumerate(config.get("pairs") or []):
        for m in pair:
            if m not in models:
                raise ConfigError(f"pairs[{i}]: model {m!r} is not defined under models "
                                  f"(defined: {', '.join(models)})")
        if pair[0] == pair[1]:
            raise ConfigError(f"pairs[{i}]: a model cannot be paired with itself ({pair[0]!r})")
    return tables


def require_rows(tables: dict, dataset: str, key: str, *, true: int = 0, false: int = 0, total: int = 0,
                 splits: "dict | None" = None, why: str = "") -> None:
    """A ConfigError naming ``key`` and the dataset when its normalised table (in
    ``tables``; absent: nothing to check yet) has fewer than ``true`` true, ``false`` false
    or ``total`` rows, or, for instructions, no row in one of the train / val / test splits
    that ``splits`` (``{"fractions": ..., "seed": ...}``, as refusal assigns them) gives."""
    table = tables.get(dataset)
    if table is None:
        return
    where = f"{key}: dataset {dataset!r} ({len(table)} rows after cleaning)"
    if "label" in table.columns:
        have = {"true": int((table["label"] == 1).sum()), "false": int((table["label"] == 0).sum())}
        for label, need in (("true", true), ("false", false)):
            if have[label] < need:
                raise ConfigError(f"{where} has {have[label]} {label} statements, {why} needs {need}")
    if len(table) < total:
        raise ConfigError(f"{where} is too small: {why} needs {total} rows")
    if splits is not None:
        from .data import SPLITS, instruction_splits

        present = set(instruction_splits(table, splits["fractions"], splits["seed"]).tolist())
        for split in SPLITS:
            if split not in present:
                raise ConfigError(f"{where} has no row in split {split!r} ({why}); give it more rows, a split "
                                  f"column, or other refusal.split_fractions")


def require_all(tsv: str, dataset: str, needs: list[dict], out: str, log: str | None = None) -> None:
    """``require_rows`` for each need (``{key, ...}``) of one normalised dataset file; on
    success ``out`` (and ``log``) list the settings it satisfies, one line each (rule
    dataset_sized)."""
    from .data import load_table
    from .io import atomic_path

    table = load_table(tsv)
    for need in needs:
        require_rows({dataset: table}, dataset, **need)
    report = "".join(f"{need['key']}: ok ({len(table)} rows)\n" for need in needs)
    if log:
        Path(log).parent.mkdir(parents=True, exist_ok=True)
        Path(log).write_text(report)
    with atomic_path(out) as tmp:
        tmp.write_text(report)


def model_pairs(config: dict) -> list[tuple[str, str]]:
    """Ordered (source, target) model pairs: ``config["pairs"]`` if given, else every
    ordered pair of distinct models within a family."""
    if config.get("pairs"):
        return [tuple(p) for p in config["pairs"]]
    models = config["models"]
    return [(a, b) for a, b in itertools.permutations(models, 2)
            if models[a]["family"] == models[b]["family"]]


def direction(config: dict, source: str, target: str) -> str:
    """forward (base -> post-trained), backward (post-trained -> base) or lateral."""
    roles = config["models"][source]["role"], config["models"][target]["role"]
    if roles[0] == "base" and roles[1] != "base":
        return "forward"
    if roles[1] == "base" and roles[0] != "base":
        return "backward"
    return "lateral"


EXTRACTION_MODEL_KEYS = ("path", "revision", "role", "template", "dtype", "device_map")


def extraction_model_spec(config: dict, model: str) -> dict:
    """The part of a model's entry that changes its activations (not its family, nor
    per-analysis layers), so that editing those re-extracts nothing."""
    spec = config["models"][model]
    return {k: spec[k] for k in EXTRACTION_MODEL_KEYS if k in spec}


def prompt_set_spec(config: dict, name: str) -> dict:
    """A prompt set's definition without its dataset list, so adding a dataset to the
    set does not re-extract the others."""
    return {k: v for k, v in config["prompt_sets"][name].items() if k != "datasets"}
