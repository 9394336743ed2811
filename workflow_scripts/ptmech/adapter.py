"""The model adapter: one small object that turns any supported Hugging Face causal LM
into what the analyses need.

Residual index convention (used everywhere in ptmech): ``k = 0..L`` where ``k = 0`` is
the embedding output (the input of decoder block 0) and ``k = l + 1`` is the output of
decoder block ``l``, *before* the final norm. The paper's truthfulness "layer l" is
``k = l + 1``; its refusal "resid_pre layer l" is ``k = l``.

Module names are found in the model itself (``ptmech.architectures.discover``), with the rows
of ``ptmech.architectures.ARCHITECTURES`` as overrides: no subclass per architecture.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch

from .architectures import ARCHITECTURES, UnsupportedArchitecture, architecture_of
from .layers import LAYER_CONVENTION  # noqa: F401 (re-exported)


DEFAULT_BASE_TEMPLATE = "User: {instruction}\nAssistant:"


def _get(module: torch.nn.Module, dotted: str) -> Any:
    for part in dotted.split("."):
        module = getattr(module, part)
    return module


def _kv_cache_name() -> str:
    from transformers.modeling_outputs import CausalLMOutputWithPast

    return "cache" if "cache" in getattr(CausalLMOutputWithPast, "__dataclass_fields__", {}) else "past_key_values"


# transformers renamed the key/value cache argument and output field past_key_values to cache
# (the old name warns and is to go in 5.40); pyproject allows releases from before the rename
KV_CACHE = _kv_cache_name()


def kv_cache(out):
    """The key/value cache of a forward pass's output, under either name."""
    return getattr(out, KV_CACHE)


def repeat_rows(x: torch.Tensor, n: int) -> torch.Tensor:
    """Each row of ``x`` (dim 0) ``n`` times in a row: ``x`` itself for n = 1, a stride-0
    view for one row, else a copy (``repeat_interleave``)."""
    if n == 1:
        return x
    return x.expand(n, *x.shape[1:]) if x.shape[0] == 1 else x.repeat_interleave(n, dim=0)


def repeat_cache(cache: Any, n: int, length: int | None = None) -> Any:
    """A new key/value cache whose rows are each row of ``cache`` repeated ``n`` times in a
    row (``batch_repeat_interleave``), keeping only its first ``length`` tokens (None: all);
    ``cache`` itself is left as it was. A one-row transformers ``DynamicCache`` (full
    attention layers) is repeated as stride-0 views, copied only when the next tokens are
    appended, and ``n`` = 1 shares the tensors (a fresh cache to append to); any other cache
    by copying."""
    layers = getattr(cache, "layers", None)
    from transformers.cache_utils import DynamicLayer

    if layers and all(type(layer) is DynamicLayer and layer.is_initialized for layer in layers):
        new = copy.copy(cache)
        new.layers = [copy.copy(layer) for layer in layers]
        for layer in new.layers:
            keys, values = layer.keys, layer.values
            if length is not None:
                keys, values = keys[..., :length, :], values[..., :length, :]
            layer.keys, layer.values = repeat_rows(keys, n), repeat_rows(values, n)
        return new
    new = copy.deepcopy(cache)
    if length is not None and new.get_seq_length() > length:
        new.crop(length - new.get_seq_length())  # negative: drop that many (sliding windows allow only this)
    new.batch_repeat_interleave(n)
    return new


def block_output(output: Any) -> torch.Tensor:
    """The residual-stream tensor of a decoder block's output: a bare tensor in
    transformers 5, the first element of a tuple in older releases."""
    return output[0] if isinstance(output, (tuple, list)) else output


class ContextError(ValueError):
    pass


class ModelAdapter:
    """A loaded causal LM plus the facts the analyses need about it."""

    def __init__(self, model: torch.nn.Module, tokenizer: Any = None, name: str = "",
                 template: str | None = None, role: str = "base"):
        self.model = model
        self.tokenizer = tokenizer
        self.name = name or getattr(model.config, "_name_or_path", "")
        self.role = role
        self.template = template
        self.arch = architecture_of(model.config.model_type, self.name, model)

    # --- structure -------------------------------------------------------------------
    @property
    def backbone(self) -> torch.nn.Module:
        """The decoder stack without the unembedding (e.g. ``model.model``)."""
        return _get(self.model, self.arch.blocks.rsplit(".", 1)[0])

    @property
    def blocks(self) -> torch.nn.ModuleList:
        return _get(self.model, self.arch.blocks)

    @property
    def n_layers(self) -> int:
        return len(self.blocks)

    @property
    def d_model(self) -> int:
        return self.unembed_weight.shape[1]

    @property
    def final_norm(self) -> torch.nn.Module:
        return _get(self.model, self.arch.final_norm)

    @property
    def unembed(self) -> torch.nn.Module:
        return self.model.get_output_embeddings()

    @property
    def unembed_weight(self) -> torch.Tensor:
        """[V, d_model]"""
        return self.unembed.weight

    def attn(self, layer: int) -> torch.nn.Module:
        return _get(self.blocks[layer], self.arch.attn)

    def mlp(self, layer: int) -> torch.nn.Module:
        return _get(self.blocks[layer], self.arch.mlp)

    def mlp_out(self, layer: int = -1) -> torch.nn.Module:
        """The MLP's output projection of block ``layer`` (its input is the neuron
        activations)."""
        try:
            if self.arch.mlp_out is not None:
                return _get(self.blocks[layer], self.arch.mlp_out)
        except AttributeError:  # block `layer` is built otherwise than block 0 (dense and MoE blocks mixed)
            pass
        raise UnsupportedArchitecture(
            f"model {self.name!r}: the MLP of block {layer} ({type(self.mlp(layer)).__name__}) has no single output "
            f"projection (a mixture of experts?), which per-neuron analyses (confidence) need")

    def mlp_out_rows(self, layer: int = -1) -> torch.Tensor:
        """[d_mlp, d_model]: row i is what neuron i writes to the residual stream."""
        w = self.mlp_out(layer).weight
        return w if self.arch.mlp_out_kind == "conv1d" else w.T

    def rescale_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """What the model does to the head's output ``h(x) = W_U x (+ b)`` before it returns
        logits: Cohere multiplies by ``logit_scale``, Granite divides by ``logits_scaling``,
        Gemma 2 soft-caps at ``final_logit_softcapping``. Elementwise, so it applies to any
        subset of the vocabulary's rows."""
        cfg = self.model.config
        scale = getattr(cfg, "logit_scale", None)
        if isinstance(scale, (int, float)) and scale != 1:
            logits = logits * scale
        divisor = getattr(cfg, "logits_scaling", None)
        if isinstance(divisor, (int, float)) and divisor != 1:
            logits = logits / divisor
        cap = getattr(cfg, "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return logits

    def head_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """float32 [N, V] logits of final hidden states ``hidden`` [N, d] (the backbone's
        output, final norm applied): the head on a contiguous copy (on a strided view such
        as ``h[:, -1]`` torch's CPU matmul is several times slower at a large vocabulary),
        then ``rescale_logits``."""
        return self.rescale_logits(self.unembed(hidden.contiguous())).float()

    def final_norm_gain(self) -> torch.Tensor:
        """[d_model] the final norm's effective elementwise scale (ones for a norm without
        a weight, as OLMo's)."""
        w = getattr(self.final_norm, "weight", None)
        if w is None:
            return torch.ones(self.d_model, device=self.device, dtype=self.dtype)
        return w + self.arch.norm_offset

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    # --- prompts ---------------------------------------------------------------------
    def instruction_template(self) -> str:
        """The string template with one ``{instruction}`` slot used for instructions:
        the configured template if any; the plain base template for base models;
        otherwise the tokenizer's chat template (one user turn, generation prompt)."""
        if self.template:
            return self.template
        if self.role == "base":
            return DEFAULT_BASE_TEMPLATE
        if getattr(self.tokenizer, "chat_template", None) is None:
            raise ValueError(
                f"model {self.name!r} (role {self.role!r}) has no chat template in its "
                f"tokenizer; give models.{self.name}.template in the config"
            )
        marker = "\x00INSTRUCTION\x00"
        rendered = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": marker}], tokenize=False, add_generation_prompt=True
        )
        if rendered.count(marker) != 1:
            raise ValueError(f"model {self.name!r}: cannot locate the user turn in its chat template")
        return rendered.replace("{", "{{").replace("}", "}}").replace(marker, "{instruction}")

    def render_instruction(self, instruction: str) -> str:
        return self.instruction_template().format(instruction=instruction)

    def encode(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text, with BOS added exactly once (a rendered chat
        template that already starts with the BOS text is not given a second one)."""
        tok = self.tokenizer
        bos = getattr(tok, "bos_token", None)
        texts = list(texts)
        out: list[list[int]] = [[] for _ in texts]
        for has_bos in (False, True):
            idx = [i for i, t in enumerate(texts) if (bool(bos) and t.startswith(bos)) == has_bos]
            if idx:
                ids = tok([texts[i] for i in idx], add_special_tokens=not has_bos)["input_ids"]
                for i, x in zip(idx, ids):
                    out[i] = list(x)
        self.check_context(texts, out)
        return out

    @property
    def context_length(self) -> int | None:
        """The positions the model was built for (None where its config does not say)."""
        cfg = self.model.config
        for key in ("max_position_embeddings", "n_positions"):
            if isinstance(getattr(cfg, key, None), int):
                return getattr(cfg, key)
        return None

    def check_context(self, texts: list[str], ids: list[list[int]]) -> None:
        """A ContextError naming the model and the first prompt longer than its context:
        past it, learned position embeddings fail and rotary ones run unseen positions."""
        n = self.context_length
        long = [i for i, x in enumerate(ids) if n is not None and len(x) > n]
        if long:
            i = max(long, key=lambda j: len(ids[j]))
            raise ContextError(
                f"model {self.name!r}: {len(long)} of {len(ids)} prompts are longer than its context of {n} "
                f"positions, the longest {len(ids[i])} tokens (prompt {i}, {texts[i][:80]!r}...); shorten those "
                f"statements or leave them out of the dataset")

    def n_post_instruction_tokens(self) -> int:
        """Number of template tokens after the instruction text (e.g. ``\\nAssistant:``),
        counted by tokenising the template's suffix on its own."""
        suffix = self.instruction_template().split("{instruction}", 1)[1]
        suffix = suffix.replace("{{", "{").replace("}}", "}")
        return len(self.tokenizer(suffix, add_special_tokens=False)["input_ids"])


def _fingerprint_files(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(p.name.encode())
        with open(p, "rb") as f:
            h.update(hashlib.file_digest(f, "sha256").digest())
    return h.hexdigest()


def model_fingerprints(model: torch.nn.Module, tokenizer: Any, path: str | None = None) -> dict:
    """Hashes that identify exactly which weights and tokenizer produced a file.

    The weights hash is over the weight files when ``path`` is a local folder, else over
    the loaded parameters."""
    cfg = json.dumps(model.config.to_dict(), sort_keys=True, default=str)
    out = {"config_sha256": hashlib.sha256(cfg.encode()).hexdigest()}
    files = []
    if path and Path(path).is_dir():
        files = [p for p in Path(path).iterdir() if p.suffix in {".safetensors", ".bin", ".pt"}]
    if files:
        out["weights_sha256"] = _fingerprint_files(files)
    else:
        h = hashlib.sha256()
        for name, p in sorted(model.state_dict().items()):
            h.update(name.encode())
            h.update(p.detach().to("cpu").contiguous().view(torch.uint8).numpy().tobytes())
        out["weights_sha256"] = h.hexdigest()
    if tokenizer is not None:
        vocab = json.dumps(sorted(tokenizer.get_vocab().items()), ensure_ascii=False)
        extra = json.dumps([tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token,
                            getattr(tokenizer, "chat_template", None)], default=str)
        out["tokenizer_sha256"] = hashlib.sha256((vocab + extra).encode()).hexdigest()
    return out


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(dtype: str, device: str) -> torch.dtype:
    """``auto``: bfloat16 on a GPU, float32 on the CPU."""
    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return DTYPES[dtype]


def resolve_device(device: str = "auto") -> str:
    """``auto``: the first GPU this process was given (CUDA_VISIBLE_DEVICES decides which
    physical one), else the CPU."""
    if device == "auto":
        from .resources import claim_gpu

        claim_gpu()  # a local run on a multi-GPU machine: one GPU per job
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def load_model(name: str, spec: dict, device: str = "auto") -> ModelAdapter:
    """Load tokenizer and model from ``spec["path"]`` (a local folder or a hub id;
    ``HF_HUB_OFFLINE=1`` is honoured by huggingface_hub) and wrap them in an adapter.

    ``spec`` is one entry of the config's ``models`` mapping."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    path = spec["path"]
    revision = spec.get("revision")
    if os.path.isabs(path) or path.startswith((".", "results/")) or Path(path).exists():
        if not Path(path).is_dir():
            raise FileNotFoundError(f"model {name!r}: local model folder {path!r} does not exist")
    config = AutoConfig.from_pretrained(path, revision=revision)
    if config.model_type not in ARCHITECTURES and getattr(config, "is_encoder_decoder", False):
        raise UnsupportedArchitecture(f"model {name!r}: {config.model_type!r} is an encoder-decoder model; ptmech "
                                      f"reads decoder-only models")  # before loading any weights
    device = resolve_device(spec.get("device", device))
    dtype = resolve_dtype(spec.get("dtype", "auto"), device)
    kwargs: dict[str, Any] = {"dtype": dtype, "revision": revision}
    if spec.get("device_map"):
        kwargs["device_map"] = spec["device_map"]
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if not spec.get("device_map"):
        model.to(device)
    model.eval()
    model.requires_grad_(False)
    tokenizer = AutoTokenizer.from_pretrained(path, revision=revision)
    prepare_tokenizer(tokenizer)
    return ModelAdapter(model, tokenizer, name=name, template=spec.get("template"),
                        role=spec.get("role", "base"))


def prepare_tokenizer(tokenizer: Any) -> Any:
    """Left padding (negative positions then index the same token in every row), and
    pad := eos when the tokenizer has no pad token, as nnsight and the paper do."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def provenance(adapter: "ModelAdapter", spec: dict) -> dict:
    """Where the model of a file came from (its config entry ``spec``), with the versions
    that ran it and the hashes of its weights and tokenizer: the attributes every activation
    file carries (ptmech.h5 adds how it was stored)."""
    from . import __version__

    return {"path": spec["path"], "role": spec.get("role", ""), "ptmech_version": __version__,
            **library_versions(), **model_fingerprints(adapter.model, adapter.tokenizer, spec["path"])}


def library_versions() -> dict[str, str]:
    import h5py
    import transformers

    return {"torch_version": torch.__version__, "transformers_version": transformers.__version__,
            "h5py_version": h5py.__version__}
