"""Batched forward passes that return what the live analyses read: the logits at the
last position of left-padded prompts (with any hooks the caller has installed)."""

from __future__ import annotations

from typing import Sequence

import torch

from .adapter import ModelAdapter
from .residual import left_pad


@torch.inference_mode()
def last_logits(adapter: ModelAdapter, texts: Sequence[str] | None = None, *, ids: Sequence[Sequence[int]] | None = None,
                batch_size: int = 32) -> torch.Tensor:
    """float32 [N, V] logits at each prompt's last token, in input order. Prompts are
    batched in length order to waste little on padding."""
    ids = adapter.encode(list(texts)) if ids is None else [list(x) for x in ids]
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    out = torch.empty((len(ids), adapter.unembed_weight.shape[0]), dtype=torch.float32)
    for start in range(0, len(ids), batch_size):
        idx = order[start:start + batch_size]
        out[idx] = batch_last_logits(adapter, [ids[i] for i in idx])
    return out


@torch.inference_mode()
def batch_last_logits(adapter: ModelAdapter, ids: Sequence[Sequence[int]]) -> torch.Tensor:
    """float32 [B, V] logits at the last token of one left-padded batch, in the given row
    order (for callers whose hooks hold per-row state)."""
    input_ids, mask, pos = left_pad(ids, adapter.tokenizer.pad_token_id, adapter.device)
    logits = adapter.model(input_ids=input_ids, attention_mask=mask, position_ids=pos,
                           use_cache=False, logits_to_keep=1).logits[:, -1]
    return logits.float().cpu()
