"""The module layout of each supported architecture, as data (``ARCHITECTURES``). Needs no
torch, so that the Snakefile can check models when it is parsed."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Architecture:
    """Dotted module paths, relative to the ``*ForCausalLM`` module (blocks, final norm)
    or to one decoder block (attention, mlp, mlp output projection). The unembedding is
    ``get_output_embeddings()``."""

    blocks: str
    final_norm: str
    attn: str
    mlp: str
    mlp_out: str
    # "linear": weight is [d_model, d_mlp] (nn.Linear); "conv1d": [d_mlp, d_model] (GPT-2).
    mlp_out_kind: str = "linear"
    # Gemma's RMSNorm scales by (1 + weight).
    norm_offset: float = 0.0


_LLAMA_LIKE = Architecture(
    blocks="model.layers",
    final_norm="model.norm",
    attn="self_attn",
    mlp="mlp",
    mlp_out="mlp.down_proj",
)
_GEMMA = Architecture(**{**_LLAMA_LIKE.__dict__, "norm_offset": 1.0})

ARCHITECTURES: dict[str, Architecture] = {
    "llama": _LLAMA_LIKE,
    "mistral": _LLAMA_LIKE,
    "qwen2": _LLAMA_LIKE,
    "qwen3": _LLAMA_LIKE,
    "olmo2": _LLAMA_LIKE,
    "phi3": _LLAMA_LIKE,
    "gemma": _GEMMA,
    "gemma2": _GEMMA,
    "gemma3_text": _GEMMA,
    "gpt2": Architecture(
        blocks="transformer.h",
        final_norm="transformer.ln_f",
        attn="attn",
        mlp="mlp",
        mlp_out="mlp.c_proj",
        mlp_out_kind="conv1d",
    ),
    "gpt_neox": Architecture(
        blocks="gpt_neox.layers",
        final_norm="gpt_neox.final_layer_norm",
        attn="attention",
        mlp="mlp",
        mlp_out="mlp.dense_4h_to_h",
    ),
}


class UnsupportedArchitecture(ValueError):
    pass


def architecture_of(model_type: str, name: str = "") -> Architecture:
    try:
        return ARCHITECTURES[model_type]
    except KeyError:
        raise UnsupportedArchitecture(
            f"model {name!r}: architecture {model_type!r} is not supported by the ptmech "
            f"adapter (supported: {', '.join(sorted(ARCHITECTURES))}); add a row to "
            f"ptmech.architectures.ARCHITECTURES"
        ) from None
