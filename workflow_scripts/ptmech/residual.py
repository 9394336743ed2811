"""Reading the residual stream: batching with left padding, hooks that always come off,
and a forward pass that returns the residual at chosen (index k, position) cells.

Positions are negative indices counted back from the last real token (-1 = last). With
left padding the last real token of every row sits in the last column, so a negative
position indexes the same token of every prompt regardless of its length.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterable, Iterator, Sequence

import torch

from .adapter import ModelAdapter, block_output


@contextmanager
def hooked(registrations: Iterable[tuple[torch.nn.Module, str, Callable]]) -> Iterator[None]:
    """Install hooks for the duration of a ``with`` block and remove them even on error.

    Each registration is ``(module, kind, fn)`` with kind ``"forward"`` (fn(module,
    args, output)) or ``"pre"`` (fn(module, args, kwargs), with_kwargs=True)."""
    handles = []
    try:
        for module, kind, fn in registrations:
            if kind == "forward":
                handles.append(module.register_forward_hook(fn))
            elif kind == "pre":
                handles.append(module.register_forward_pre_hook(fn, with_kwargs=True))
            else:
                raise ValueError(f"unknown hook kind {kind!r}")
        yield
    finally:
        for h in handles:
            h.remove()


@contextmanager
def skipped_blocks(blocks: Sequence[torch.nn.Module], outputs: Sequence[torch.Tensor]) -> Iterator[None]:
    """Blocks ``0..len(outputs)-1`` return ``outputs[l]`` instead of computing, for a pass
    whose result there is already known (no row of the batch is changed below block
    ``len(outputs)``). Their hooks still run; they write no key/value cache. Only for
    blocks that return a bare tensor (transformers 5)."""
    try:
        for block, out in zip(blocks, outputs):
            block.forward = lambda *args, _out=out, **kwargs: _out
        yield
    finally:
        for block in blocks[:len(outputs)]:
            block.__dict__.pop("forward", None)


def left_pad(ids: Sequence[Sequence[int]], pad_id: int, device: torch.device | str = "cpu"):
    """Left-pad token id lists.

    Returns ``input_ids`` [B, S], ``attention_mask`` [B, S] and ``position_ids`` [B, S]
    where position ids count real tokens only (0 at each row's first real token), so a
    prompt's activations do not depend on what it is batched with."""
    width = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, x in enumerate(ids):
        if len(x):
            input_ids[i, width - len(x):] = torch.as_tensor(x, dtype=torch.long)
            mask[i, width - len(x):] = 1
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    return input_ids.to(device), mask.to(device), position_ids.to(device)


class _StopForward(Exception):
    pass


def _hidden_from_pre_hook(args: tuple, kwargs: dict) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]


def residual_at(
    adapter: ModelAdapter,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    position_ids: torch.Tensor,
    layers: Sequence[int],
    positions: Sequence[int],
) -> torch.Tensor:
    """Residual stream at residual indices ``layers`` (k in 0..L) and negative
    ``positions`` of a left-padded batch.

    Returns [B, len(layers), len(positions), d_model] in the model's dtype. Runs the
    backbone only (no unembedding) and stops after the deepest requested block."""
    n_layers = adapter.n_layers
    if any(not 0 <= k <= n_layers for k in layers):
        raise ValueError(f"residual indices must lie in 0..{n_layers}, got {list(layers)}")
    if any(p >= 0 for p in positions):
        raise ValueError(f"positions must be negative (counted from the end), got {list(positions)}")
    if -min(positions) > input_ids.shape[1]:
        raise ValueError(f"position {min(positions)} lies before the start of a {input_ids.shape[1]}-token batch")
    pos = torch.as_tensor([input_ids.shape[1] + p for p in positions], device=input_ids.device)
    wanted = {k: i for i, k in enumerate(layers)}
    out: list[torch.Tensor | None] = [None] * len(layers)
    deepest = max(layers)

    def grab(k: int, hidden: torch.Tensor) -> None:
        out[wanted[k]] = hidden.index_select(1, pos)

    regs = []
    if 0 in wanted:
        regs.append((adapter.blocks[0], "pre", lambda m, a, kw: grab(0, _hidden_from_pre_hook(a, kw))))
    for k in wanted:
        if k == 0:
            continue

        def fwd(m, a, o, k=k):
            grab(k, block_output(o))
            if k == deepest:
                raise _StopForward

        regs.append((adapter.blocks[k - 1], "forward", fwd))
    if deepest == 0:
        def stop(m, a, kw):
            raise _StopForward
        regs.append((adapter.blocks[0], "pre", stop))

    backbone = adapter.backbone
    with hooked(regs):
        try:
            backbone(input_ids=input_ids, attention_mask=attention_mask,
                     position_ids=position_ids, use_cache=False)
        except _StopForward:
            pass
    return torch.stack(out, dim=1)
