"""The module layout of a decoder-only model: found in the model itself (``discover``: the
ModuleList of decoder blocks, the norm beside it that feeds the head, each block's attention,
MLP and MLP output projection), with the rows of ``ARCHITECTURES`` as overrides for the
architectures ptmech was written against. Importing it needs no torch, so that the Snakefile
can check models when it is parsed."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Architecture:
    """Dotted module paths, relative to the ``*ForCausalLM`` module (blocks, final norm)
    or to one decoder block (attention, mlp, mlp output projection). The unembedding is
    ``get_output_embeddings()``."""

    blocks: str
    final_norm: str
    attn: str | None
    mlp: str | None
    # None: no single output projection (a mixture of experts); the confidence stage needs one.
    mlp_out: str | None
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


def architecture_of(model_type: str, name: str = "", model=None) -> Architecture:
    """The table's row for ``model_type``, else the layout ``discover`` finds in ``model``
    (a loaded or meta-device ``*ForCausalLM``); without a model an unknown type is an error."""
    if model_type in ARCHITECTURES:
        return ARCHITECTURES[model_type]
    if model is not None:
        return discover(model, name)
    raise UnsupportedArchitecture(
        f"model {name!r}: architecture {model_type!r} is not in ptmech.architectures.ARCHITECTURES and no "
        f"model was given to discover its layout from")


def n_blocks(config) -> int | None:
    for key in ("num_hidden_layers", "n_layer", "num_layers"):
        value = getattr(config, key, None)
        if isinstance(value, int):
            return value
    return None


def _is_norm(module) -> bool:
    return "norm" in type(module).__name__.lower()


def _writes(module, d_model: int) -> bool:
    """A projection into the residual stream: an nn.Linear to d_model or GPT-2's Conv1D."""
    import torch

    if type(module).__name__ == "Conv1D":
        return getattr(module, "nf", None) == d_model
    return isinstance(module, torch.nn.Linear) and module.out_features == d_model


ATTENTION_NAMES = ("self_attn", "attn", "attention", "self_attention")
MLP_NAMES = ("mlp", "feed_forward", "ffn", "block_sparse_moe")


def discover(model, name: str = "") -> Architecture:
    """The layout of a decoder-only ``*ForCausalLM`` from its modules: the decoder blocks are
    the first ModuleList as long as the config's layer count; the final norm is the norm
    module beside them (not an embedding norm, the last such when there are several); in a
    block, attention and MLP are the children named or typed so, and the MLP output is the
    MLP's last projection back to d_model (a block with no MLP module, as OPT's, writes with
    its last such projection). Raises UnsupportedArchitecture with the reason."""
    import torch

    what = f"model {name!r} ({type(model).__name__})"
    if getattr(model.config, "is_encoder_decoder", False):
        raise UnsupportedArchitecture(f"{what}: an encoder-decoder model; ptmech reads decoder-only models")
    n = n_blocks(model.config)
    lists = [path for path, m in model.named_modules() if isinstance(m, torch.nn.ModuleList) and n and len(m) == n]
    if not lists:
        raise UnsupportedArchitecture(f"{what}: no ModuleList of {n} decoder blocks (the config's layer count)")
    blocks = lists[0]
    parent = blocks.rsplit(".", 1)[0] if "." in blocks else ""
    backbone = model.get_submodule(parent)
    norms = [child for child, m in backbone.named_children() if _is_norm(m) and "embed" not in child]
    if not norms:
        raise UnsupportedArchitecture(f"{what}: no final norm beside its decoder blocks {blocks!r}")
    head = model.get_output_embeddings()
    if head is None or getattr(head, "weight", None) is None:
        raise UnsupportedArchitecture(f"{what}: no output embedding (get_output_embeddings)")
    d_model = getattr(model.config, "hidden_size", None) or head.weight.shape[1]
    block = model.get_submodule(blocks)[0]
    children = dict(block.named_children())
    attn = next((c for c in ATTENTION_NAMES if c in children), None) or next(
        (c for c, m in children.items() if "attention" in type(m).__name__.lower()), None)
    mlp = next((c for c in MLP_NAMES if c in children), None) or next(
        (c for c, m in children.items() if any(t in type(m).__name__.lower() for t in ("mlp", "moe", "feedforward"))),
        None)
    if mlp is None:  # the MLP's layers sit in the block itself (OPT: fc1, fc2)
        writers = [c for c, m in children.items() if c != attn and _writes(m, d_model)]
        mlp = mlp_out = writers[-1] if writers else None
    else:
        writers = [c for c, m in children[mlp].named_children() if _writes(m, d_model)]
        mlp_out = f"{mlp}.{writers[-1]}" if writers else None
    if attn is None or mlp is None:
        raise UnsupportedArchitecture(f"{what}: cannot tell the attention and MLP of its decoder block "
                                      f"(children: {', '.join(children)}); add a row to ARCHITECTURES")
    kind = "conv1d" if mlp_out and type(block.get_submodule(mlp_out)).__name__ == "Conv1D" else "linear"
    final_norm = f"{parent}.{norms[-1]}" if parent else norms[-1]
    return Architecture(blocks=blocks, final_norm=final_norm, attn=attn, mlp=mlp, mlp_out=mlp_out,
                        mlp_out_kind=kind, norm_offset=_norm_offset(model.get_submodule(final_norm)))


def _norm_offset(norm) -> float:
    """1.0 for a norm that scales by (1 + weight) (Gemma's RMSNorm), else 0.0, found by
    running it (0.0 on the meta device, where nothing runs)."""
    import torch

    w = getattr(norm, "weight", None)
    if w is None or w.device.type == "meta":
        return 0.0
    with torch.no_grad():
        x = torch.randn(4, w.shape[0], generator=torch.Generator().manual_seed(0)).to(w.device, w.dtype)
        y = norm(x).float()
        x = x.float()
        for centred in (False, True):
            c = x - x.mean(-1, keepdim=True) if centred else x
            xhat = c / torch.sqrt(c.pow(2).mean(-1, keepdim=True) + 1e-5)
            bias = getattr(norm, "bias", None)
            b = 0.0 if bias is None else bias.float()
            for offset in (0.0, 1.0):
                if torch.allclose(y, xhat * (w.float() + offset) + b, rtol=1e-2, atol=1e-3):
                    return offset
    return 0.0
