"""Interventions on the residual stream: tiny pure hook factories (ablate a direction, add
a vector) and the sites they are installed at, composed per experiment and installed with
``ptmech.residual.hooked`` (so they always come off).

Sites of decoder block ``l`` (the paper's TransformerLens names in brackets):

* ``block_input``      the block's input, residual index ``k = l`` (``resid_pre``);
* ``attention_output`` what the attention sub-layer writes into the residual stream, so the
                       stream after it (``resid_mid``) moves by the same amount;
* ``mlp_output``       what the MLP writes (``resid_post`` = the block's output).

For pre-norm blocks (Llama, Mistral, Qwen, Phi-3, GPT-2, GPT-NeoX) the writes are the
outputs of the attention and MLP modules; blocks with post-sub-layer norms (Gemma 2/3,
OLMo 2) add the output of ``post_attention_layernorm`` / ``post_feedforward_layernorm``
instead, so those are hooked (hooking the module before its norm would let the norm
re-introduce the ablated component).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from .adapter import ModelAdapter

SITES = ("block_input", "attention_output", "mlp_output")

Edit = Callable[[torch.Tensor], torch.Tensor]
Registration = tuple[torch.nn.Module, str, Callable]


# --- what to do to a residual-stream tensor [..., d_model] ---------------------------------
def ablate_direction(direction: torch.Tensor) -> Edit:
    """x -> x - (x . r) r with r = direction / |direction| (computed in float32, returned
    in x's dtype). ``direction`` [d_model]."""
    on = _on_device(_unit(direction))

    def edit(x: torch.Tensor) -> torch.Tensor:
        r = on(x.device)
        x32 = x.float()
        return (x32 - (x32 @ r).unsqueeze(-1) * r).to(x.dtype)

    return edit


def add_vector(vector: torch.Tensor) -> Edit:
    """x -> x + vector (broadcast over batch and positions). ``vector`` [d_model]."""
    on = _on_device(torch.as_tensor(vector).detach().float().flatten())

    def edit(x: torch.Tensor) -> torch.Tensor:
        return (x.float() + on(x.device)).to(x.dtype)

    return edit


def ablate_rows(directions: Callable[[], torch.Tensor | None]) -> Edit:
    """Row b of a batch x [B, ..., d_model] loses its own unit direction: x[b] -> x[b] -
    (x[b] . r_b) r_b, with ``directions()`` the current batch's [B, d_model] float32 unit
    rows on x's device (a zero row leaves its row exactly as it was; None leaves the
    batch alone). For scoring many candidate directions in one batch."""

    def edit(x: torch.Tensor) -> torch.Tensor:
        r = directions()
        if r is None:
            return x
        x32 = x.float()
        r = _per_row(r, x)
        return (x32 - (x32 * r).sum(-1, keepdim=True) * r).to(x.dtype)

    return edit


def add_rows(vectors: Callable[[], torch.Tensor | None]) -> Edit:
    """Row b of x [B, ..., d_model] gets its own vector: x[b] -> x[b] + v_b, with
    ``vectors()`` the current batch's [B, d_model] float32 rows on x's device (None leaves
    the batch alone)."""

    def edit(x: torch.Tensor) -> torch.Tensor:
        v = vectors()
        if v is None:
            return x
        return (x.float() + _per_row(v, x)).to(x.dtype)

    return edit


def _per_row(rows: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``rows`` [B, d] shaped to broadcast over x [B, ..., d], or over x [B * T, d] from a
    module that flattens batch and positions into one axis (OPT's MLP, Llama 4's mixture of
    experts), batch-major as ``reshape`` flattens."""
    if x.dim() == 2 and x.shape[0] != rows.shape[0] and rows.shape[0] and x.shape[0] % rows.shape[0] == 0:
        return rows.repeat_interleave(x.shape[0] // rows.shape[0], dim=0)
    return rows.view(rows.shape[0], *([1] * (x.dim() - 2)), rows.shape[-1])


def _unit(direction: torch.Tensor) -> torch.Tensor:
    r = torch.as_tensor(direction).detach().float().flatten()
    return r / (r.norm() + 1e-8)


def _on_device(t: torch.Tensor) -> Callable[[torch.device], torch.Tensor]:
    """``t`` on a given device, copied there once (hooks run at every layer and step)."""
    copies: dict[torch.device, torch.Tensor] = {}

    def get(device: torch.device) -> torch.Tensor:
        if device not in copies:
            copies[device] = t.to(device)
        return copies[device]

    return get


# --- where: hook functions that apply an edit ---------------------------------------------
def at_block_input(edit: Edit) -> Callable:
    """A forward pre-hook (``kind="pre"``, with kwargs) that edits a block's input."""

    def hook(module, args, kwargs):
        if args:
            return (edit(args[0]), *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": edit(kwargs["hidden_states"])}

    return hook


def at_output(edit: Edit) -> Callable:
    """A forward hook that edits a module's output (a tensor, or the first element of a
    tuple as attention modules return)."""

    def hook(module, args, output):
        if isinstance(output, (tuple, list)):
            return (edit(output[0]), *output[1:])
        return edit(output)

    return hook


def residual_writers(adapter: ModelAdapter, layer: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The modules whose outputs block ``layer`` adds to the residual stream: (attention
    write, MLP write). See the module docstring for post-norm architectures."""
    block = adapter.blocks[layer]
    if hasattr(block, "post_feedforward_layernorm"):
        return block.post_attention_layernorm, block.post_feedforward_layernorm
    return adapter.attn(layer), adapter.mlp(layer)


def site_registrations(adapter: ModelAdapter, layer: int, sites: Sequence[str], edit: Edit) -> list[Registration]:
    """Hook registrations applying ``edit`` at ``sites`` of block ``layer``."""
    unknown = set(sites) - set(SITES)
    if unknown:
        raise ValueError(f"unknown intervention site(s) {sorted(unknown)}; known: {', '.join(SITES)}")
    attn_write, mlp_write = residual_writers(adapter, layer)
    regs: list[Registration] = []
    if "block_input" in sites:
        regs.append((adapter.blocks[layer], "pre", at_block_input(edit)))
    if "attention_output" in sites:
        regs.append((attn_write, "forward", at_output(edit)))
    if "mlp_output" in sites:
        regs.append((mlp_write, "forward", at_output(edit)))
    return regs


# --- the two refusal interventions ---------------------------------------------------------
def directional_ablation(adapter: ModelAdapter, direction: torch.Tensor) -> list[Registration]:
    """Remove ``direction`` [d_model] from the residual stream everywhere: at every block's
    input, attention write and MLP write, so no residual index k = 0..L keeps a component
    along it (Arditi et al.; METHODS.md 5.4)."""
    edit = ablate_direction(direction)
    return [reg for layer in range(adapter.n_layers) for reg in site_registrations(adapter, layer, SITES, edit)]


def activation_addition(adapter: ModelAdapter, vector: torch.Tensor, k: int,
                        sites: Sequence[str] = SITES) -> list[Registration]:
    """Add ``vector`` [d_model] at ``sites`` of block ``k`` (residual index k = the block's
    input, the paper's refusal "resid_pre layer k"). With all three sites the residual
    after the block moves by 3 x vector, as in the paper's code (METHODS.md 5.4)."""
    check_block_input(adapter, k)
    return site_registrations(adapter, k, sites, add_vector(vector))


def check_block_input(adapter: ModelAdapter, k: int) -> None:
    """Activation addition happens at a block's input: residual index k in 0..L-1."""
    if not 0 <= k < adapter.n_layers:
        raise ValueError(f"activation addition needs a block input, residual index k in "
                         f"0..{adapter.n_layers - 1}, got k={k}")
