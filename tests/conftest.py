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

# Architectures without a row in ptmech.architectures.ARCHITECTURES: their layout is
# discovered from the model (architectures.discover).
DISCOVERED = ["granite", "cohere", "cohere2", "stablelm", "phi", "falcon", "gptj", "opt", "bloom", "mixtral",
              "qwen2_moe", "qwen3_moe", "smollm3", "llama4_text", "olmo", "olmo3", "starcoder2", "glm"]
MIXTURES_OF_EXPERTS = {"mixtral", "qwen2_moe", "qwen3_moe", "llama4_text"}


def discovered_config(model_type: str, vocab_size: int) -> transformers.PretrainedConfig:
    """A tiny config of ``model_type`` built from its config class: every size key the class
    has set small (given to the constructor, so derived fields such as layer_types follow)."""
    sizes = dict(TINY, num_key_value_heads=2, vocab_size=vocab_size, head_dim=8, moe_intermediate_size=32,
                 num_experts=4, num_local_experts=4, num_experts_per_tok=2, shared_expert_intermediate_size=32,
                 intermediate_size_mlp=64, max_position_embeddings=128, n_positions=128, rotary_dim=8,
                 word_embed_proj_dim=TINY["hidden_size"], ffn_dim=TINY["intermediate_size"],
                 logits_scaling=4.0)  # Granite divides its logits (Cohere multiplies by logit_scale, 0.0625)
    base = transformers.AutoConfig.for_model(model_type)
    settable = {k for k in sizes if hasattr(base, k) and not isinstance(getattr(type(base), k, None), property)}
    return transformers.AutoConfig.for_model(model_type, **{k: sizes[k] for k in settable})


def save_tiny_model(arch: str, folder: Path, seed: int = 0) -> Path:
    tok = make_tokenizer()
    cfg = tiny_configs(len(tok))[arch] if arch in ARCHS else discovered_config(arch, len(tok))
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
    """Leave-one-dataset-out probes as the truth stage fits them (``checks.probe_sweep``)."""
    from ptmech.organism import checks

    return checks.probe_sweep(adapter, tables, root, kinds)


def refusal_defaults() -> dict:
    """The refusal section's defaults as the schema ships them."""
    from ptmech.config import schema_defaults

    return schema_defaults(str(REPO / "config.schema.yaml"), "refusal")


def own_direction_refusal(model_dir: Path, tables: dict, tmp: Path) -> dict:
    """A post-trained model's own refusal direction and its test refusal rates, as the
    refusal stage chooses and measures them with the schema's defaults
    (``checks.own_direction_refusal``)."""
    from ptmech.adapter import load_model
    from ptmech.organism import checks

    torch.set_num_threads(2)
    model = load_model(Path(model_dir).name, {"path": str(model_dir), "role": "instruct", "dtype": "float32",
                                              "device": "cpu"})
    return checks.own_direction_refusal(model, tables, tmp, refusal_defaults())
