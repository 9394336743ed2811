"""Shared fixtures: a small word-level tokenizer and tiny random models of every supported
architecture, built from their config classes and saved to local folders (no downloads)."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import pytest
import torch
import transformers

REPO = Path(__file__).resolve().parents[1]

WORDS = (
    "the city of is in a an not larger smaller than this statement true false TRUE FALSE "
    "user assistant User Assistant how to visit photograph describe poison steal burn down "
    "paris france rome italy berlin germany one two three four five six seven eight nine ten "
    "cannot help with that I i am sure here are some steps"
).split()
PUNCT = [".", ",", ":", "'", "?", "!", "-", "<", ">", "|"]

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} {% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def make_tokenizer(chat_template: str | None = CHAT_TEMPLATE):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    specials = ["<pad>", "<unk>", "<s>", "</s>", "<|user|>", "<|assistant|>"]
    vocab = {t: i for i, t in enumerate(specials + WORDS + PUNCT)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
        additional_special_tokens=["<|user|>", "<|assistant|>"],
    )
    if chat_template:
        fast.chat_template = chat_template
    return fast


TINY = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4)


def tiny_configs(vocab_size: int) -> dict[str, transformers.PretrainedConfig]:
    gqa = dict(TINY, num_key_value_heads=2, vocab_size=vocab_size)
    return {
        "llama": transformers.LlamaConfig(**gqa),
        "mistral": transformers.MistralConfig(**gqa),
        "qwen2": transformers.Qwen2Config(**gqa),
        "gemma2": transformers.Gemma2Config(**gqa, head_dim=8),
        "gemma3_text": transformers.Gemma3TextConfig(**gqa, head_dim=8),
        "olmo2": transformers.Olmo2Config(**gqa),
        "phi3": transformers.Phi3Config(**gqa, pad_token_id=0),
        "gpt2": transformers.GPT2Config(vocab_size=vocab_size, n_embd=32, n_layer=3, n_head=4, n_positions=128),
        "gpt_neox": transformers.GPTNeoXConfig(**TINY, vocab_size=vocab_size),
    }


ARCHS = list(tiny_configs(10))


def save_tiny_model(arch: str, folder: Path, seed: int = 0) -> Path:
    tok = make_tokenizer()
    cfg = tiny_configs(len(tok))[arch]
    cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id = tok.bos_token_id, tok.eos_token_id, tok.pad_token_id
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A function arch -> local folder holding a tiny random model of that architecture."""
    root = tmp_path_factory.mktemp("tiny_models")
    made: dict[str, Path] = {}

    def get(arch: str) -> Path:
        if arch not in made:
            made[arch] = save_tiny_model(arch, root / arch)
        return made[arch]

    return get


SENTENCES = [
    "the city of paris is in france .",
    "the city of rome is in italy .",
    "one is larger than two .",
    "this statement is true",
    "how to visit berlin ?",
    "the city of berlin is not in france .",
    "three four five",
    "I cannot help with that .",
    "seven is smaller than nine . this statement is : TRUE",
    "describe paris",
]


@pytest.fixture(scope="session")
def default_run(tmp_path_factory):
    """The whole workflow run once on the default config (the organism), in a temporary
    copy of the workflow; returns the working directory. PTMECH_DEFAULT_RUN may name a
    finished run's directory to reuse while developing (it is re-checked with a dry run)."""
    from workflow import copy_workflow, snakemake

    reuse = os.environ.get("PTMECH_DEFAULT_RUN")
    wd = Path(reuse) if reuse else copy_workflow(tmp_path_factory.mktemp("default_run"))
    snakemake(wd, timeout=1800)
    return wd


@pytest.fixture(scope="session")
def organism_dir(default_run, tmp_path_factory):
    """A folder holding the trained organism-{base,sft,instruct} and data/*.csv of its world."""
    root = tmp_path_factory.mktemp("organism")
    for name in ("organism-base", "organism-sft", "organism-instruct"):
        (root / name).symlink_to(default_run / "results" / "models" / name)
    (root / "data").symlink_to(default_run / "results" / "organism" / "data")
    return root


def heldout_probe_sweep(adapter, tables: dict, root: Path, kinds=("mm",)):
    """Leave-one-dataset-out probes on ``adapter``'s last-token residuals of the statement
    ``tables`` (name -> DataFrame with statement, label; cached under ``root``), as the
    truth stage fits them. Returns (accuracy table, probes, chosen layers)."""
    from ptmech import truth
    from ptmech.cache import extract

    paths = {}
    for ds, table in tables.items():
        paths[ds] = Path(root) / f"{ds}.h5"
        extract(adapter, list(table["statement"]), paths[ds], positions=[-1], storage_dtype="float32",
                labels={"label": table["label"].to_numpy()}, attrs={"dataset": ds}, log=lambda s: None)
    acc, probes = truth.sweep_caches(paths, list(tables), model=adapter.name, kinds=list(kinds))
    return acc, probes, truth.choose_layers(acc, probes.n_layers)


def refusal_defaults() -> dict:
    """The refusal section's defaults as the schema ships them."""
    import yaml

    schema = yaml.safe_load((REPO / "config.schema.yaml").read_text())["properties"]["refusal"]["properties"]

    def fill(props):
        return {k: (fill(v["properties"]) if v.get("type") == "object" and "properties" in v else v.get("default"))
                for k, v in props.items()}

    return fill(schema)


def own_direction_refusal(model_dir: Path, tables: dict, tmp: Path) -> dict:
    """A post-trained model's refusal direction, chosen by the refusal stage's automatic
    search with the schema's default settings, and its refusal rates on the test prompts:
    baseline (harmful, harmless), own direction ablated (harmful) and added (harmless).
    ``tables``: ``harmful`` / ``harmless`` instruction tables (instruction, split)."""
    from ptmech import prompts
    from ptmech import refusal as rf
    from ptmech.adapter import load_model
    from ptmech.cache import extract

    torch.set_num_threads(2)
    s = refusal_defaults()
    model = load_model(Path(model_dir).name, {"path": str(model_dir), "role": "instruct", "dtype": "float32",
                                              "device": "cpu"})
    caches = {}
    positions = prompts.positions(model, "post_instruction")
    for name in ("harmful", "harmless"):
        caches[name] = tmp / f"{name}.h5"
        extract(model, prompts.render(model, tables[name], {"kind": "instructions"}), caches[name],
                positions=positions, rows=np.arange(len(tables[name])), log=lambda x: None)
    candidates, _ = rf.candidates_from_caches(caches["harmful"], caches["harmless"], tables["harmful"],
                                              tables["harmless"], split_fractions=s["split_fractions"],
                                              split_seed=s["split_seed"], n_train=s["n_train"])

    def ids(name, split, n):
        return rf.split_prompts(model, tables[name], split, n, s["split_fractions"], s["split_seed"])[1]

    tokens = rf.refusal_token_ids(model.tokenizer, s["refusal_tokens"])
    frame, rule = rf.search_direction(model, candidates, ids("harmful", "val", s["n_val"]),
                                      ids("harmless", "val", s["n_val"]), selection=s["selection"],
                                      addition=s["addition"], refusal_tokens=tokens, prefixes=s["prefixes"])
    add = s["addition"]
    chosen = frame[frame["selected"]].iloc[0]
    k, position = int(chosen["k"]), int(chosen["position"])
    diff = candidates.direction(k, position)
    r = rf.unit(diff)
    conditions = {
        "baseline": ("harmful", rf.Intervention("none")),
        "baseline_harmless": ("harmless", rf.Intervention("none")),
        "ablation": ("harmful", rf.Intervention("ablation", r)),
        "addition": ("harmless", rf.Intervention("addition", r, k=k, coefficient=add["coefficient"],
                                                 scale=float(np.linalg.norm(diff)), sites=tuple(add["sites"]))),
    }
    rates = {}
    for cond, (name, iv) in conditions.items():
        out = rf.steer(model, ids(name, "test", s["n_test"]), iv, refusal_tokens=tokens, prefixes=s["prefixes"],
                       max_new_tokens=s["generation"]["max_new_tokens"])
        rates[cond] = float(out["refused"].mean())
    print(f"{model.name} refusal: k={k}, position {position} ({rule}); {rates}")
    return {"rule": rule, "rates": rates}
