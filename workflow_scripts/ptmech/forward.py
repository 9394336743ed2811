"""Batched forward passes that return what the live analyses read: the logits at the
last position of left-padded prompts (with any hooks the caller has installed), and
the same for many interventions at once on one prompt set (``grouped_last_logits``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch

from .adapter import KV_CACHE, ModelAdapter, block_output, kv_cache, repeat_cache
from .residual import hooked, left_pad, skipped_blocks


@torch.inference_mode()
def last_logits(adapter: ModelAdapter, texts: Sequence[str] | None = None, *, ids: Sequence[Sequence[int]] | None = None,
                batch_size: int = 32, share_prefix: bool = False) -> torch.Tensor:
    """float32 [N, V] logits at each prompt's last token, in input order. Prompts are
    batched in length order to waste little on padding. ``share_prefix``: the tokens all
    prompts start with run once (``grouped_batches``; the same up to float rounding)."""
    ids = adapter.encode(list(texts)) if ids is None else [list(x) for x in ids]
    out = torch.empty((len(ids), adapter.unembed_weight.shape[0]), dtype=torch.float32)
    if share_prefix:
        for _, idx, logits in grouped_last_logits(adapter, ids, 1, lambda rows: None, batch_size=batch_size):
            out[idx] = logits
        return out
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
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


def shared_prefix_length(ids: Sequence[Sequence[int]]) -> int:
    """The number of leading tokens all prompts of ``ids`` share (a chat template's system
    prompt and turn marker), leaving each prompt at least one token of its own."""
    if not ids:
        return 0
    first, n = ids[0], min(len(x) for x in ids) - 1
    for i in range(max(0, n)):
        if any(x[i] != first[i] for x in ids):
            return i
    return max(0, n)


# a grouped batch holds about 1 / PROMPT_SHARE of its rows' prompts per group
PROMPT_SHARE = 4


@dataclass
class GroupedBatch:
    """One batch of ``grouped_batches``: row r is prompt ``prompts[r]`` under group
    ``groups[r]``'s intervention. ``input_ids`` are the prompts' own tokens after the shared
    start (left-padded), ``past`` the shared start's key/value cache (None: no shared
    start), ``attention_mask`` covers both, ``position_ids`` continue the start's; the
    first ``len(stand_in)`` blocks are to return ``stand_in[l]`` (``skipped_blocks``)."""

    groups: torch.Tensor
    prompts: list[int]
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    past: object | None
    stand_in: list[torch.Tensor]

    def kwargs(self) -> dict:
        cache = {KV_CACHE: self.past, "use_cache": True} if self.past is not None else {"use_cache": False}
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask,
                "position_ids": self.position_ids, **cache}


@torch.inference_mode()
def grouped_batches(adapter: ModelAdapter, ids: Sequence[Sequence[int]], n_groups: int,
                    set_rows: Callable[[torch.Tensor | None], None], *,
                    first_block: Sequence[int] | None = None, batch_size: int = 32) -> Iterator[GroupedBatch]:
    """Every (group, prompt) row once, in batches of at most ``batch_size`` rows, for
    ``n_groups`` interventions whose per-row state the caller's hooks read:
    ``set_rows(groups)`` is called with the group of each row before each pass this
    function runs and before each batch is yielded (None: a pass without intervention), so
    the caller runs its pass on the batch right away.

    What does not depend on the group is computed once (the same numbers as a full pass of
    each row, up to float rounding):

    * the tokens every prompt starts with (``shared_prefix_length``: a chat template's
      system prompt) run once per group, and their key/value cache serves all its prompts;
    * ``first_block[g]``: the first block whose input group ``g`` changes (an addition at
      block k; 0 for an ablation everywhere). The blocks below it compute what a pass
      without intervention computes, so one such pass per prompt gives their output, and a
      batch stands it in for the blocks below the lowest ``first_block`` of its groups
      (only for a pass that needs no key/value cache of those blocks afterwards: not for
      generation).

    Prompts run in length order, in chunks of about ``batch_size / PROMPT_SHARE`` (less
    padding; a whole batch for one group), and a batch holds one chunk for as many groups
    as fit."""
    N, G = len(ids), int(n_groups)
    if not N or not G:
        return
    device = adapter.device
    P = shared_prefix_length(ids)
    depth = [int(d) for d in first_block] if first_block is not None else [0] * G
    order = sorted(range(N), key=lambda i: -len(ids[i]))
    batch_size = max(1, int(batch_size))
    n_p = min(N, max(1, batch_size // min(PROMPT_SHARE, G)))
    n_p = -(-N // -(-N // n_p))  # chunks as even as can be
    n_g = max(1, batch_size // n_p)
    chunks = [order[s:s + n_p] for s in range(0, N, n_p)]
    padded = []
    for chunk in chunks:
        input_ids, mask, pos = left_pad([ids[i][P:] for i in chunk], adapter.tokenizer.pad_token_id, device)
        padded.append((input_ids, torch.cat([mask.new_ones((len(chunk), P)), mask], dim=1), pos + P))
    prefix = torch.as_tensor([list(ids[0][:P])], dtype=torch.long, device=device)

    def prefix_cache(rows: torch.Tensor | None, n: int):
        if not P:
            return None
        set_rows(rows)
        return kv_cache(adapter.backbone(input_ids=prefix.expand(n, -1), use_cache=True))

    def repeated(cache, n: int):
        return None if cache is None else repeat_cache(cache, n)

    # the pass without intervention: the outputs of the blocks that batches skip
    below = sorted({d - 1 for d in depth if d > 0})
    unsteered: list[dict[int, torch.Tensor]] = [{} for _ in chunks]
    if below:
        base_cache = prefix_cache(None, 1)
        plain = True
        for c, (input_ids, mask, pos) in enumerate(padded):
            def grab(m, a, o, layer, c=c):
                nonlocal plain
                plain &= isinstance(o, torch.Tensor)
                unsteered[c][layer] = block_output(o)

            unsteered_batch = GroupedBatch(torch.zeros(0, dtype=torch.long), chunks[c], input_ids, mask, pos,
                                           repeated(base_cache, len(chunks[c])), [])
            set_rows(None)
            with hooked([(adapter.blocks[l], "forward", lambda m, a, o, l=l: grab(m, a, o, l)) for l in below]):
                adapter.backbone(**unsteered_batch.kwargs())
        if not plain:  # blocks that return tuples cannot be stood in for: run every block
            depth = [0] * G
    groups = sorted(range(G), key=lambda g: depth[g])
    for s in range(0, G, n_g):
        gs = torch.as_tensor(groups[s:s + n_g], dtype=torch.long)
        cache = prefix_cache(gs, len(gs))
        skip = min(depth[g] for g in gs.tolist())
        for c, (input_ids, mask, pos) in enumerate(padded):
            n, m = len(chunks[c]), len(gs)
            past = repeated(cache, n)
            rows = gs.repeat_interleave(n)
            set_rows(rows)
            yield GroupedBatch(rows, chunks[c] * m, input_ids.repeat(m, 1), mask.repeat(m, 1), pos.repeat(m, 1), past,
                               [unsteered[c][skip - 1].repeat(m, 1, 1)] * skip if skip else [])
    set_rows(None)


@torch.inference_mode()
def grouped_last_logits(adapter: ModelAdapter, ids: Sequence[Sequence[int]], n_groups: int,
                        set_rows: Callable[[torch.Tensor | None], None], *,
                        first_block: Sequence[int] | None = None,
                        batch_size: int = 32) -> Iterator[tuple[torch.Tensor, list[int], torch.Tensor]]:
    """The last-token logits of every (group, prompt) row of ``grouped_batches`` (see
    there): yields ``(groups [B], prompt indices, float32 [B, V] logits)`` per batch."""
    for batch in grouped_batches(adapter, ids, n_groups, set_rows, first_block=first_block, batch_size=batch_size):
        with skipped_blocks(adapter.blocks, batch.stand_in):
            hidden = adapter.backbone(**batch.kwargs()).last_hidden_state[:, -1]
        yield batch.groups, batch.prompts, adapter.head_logits(hidden).cpu()
