"""Greedy generation with whatever hooks the caller has installed active on the prompt and
on every generated token.

The paper's loop (TransformerLens) recomputes the whole sequence at every step, with no KV
cache. With the hooks also firing on each new token, a KV cache gives the same tokens: the
cached keys and values were computed from hooked activations. ``use_cache=False`` runs the
uncached loop (the oracle the tests compare against). There is no EOS stopping: exactly
``max_new_tokens`` tokens are produced, as in the paper.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from .adapter import KV_CACHE, ModelAdapter, kv_cache
from .forward import GroupedBatch, grouped_batches
from .progress import Progress
from .residual import left_pad


@dataclass
class Generations:
    """``tokens`` [N, T] int64 generated token ids (prompt excluded), in input order;
    ``first_logits`` [N, V] float32 logits at each prompt's last token (the distribution of
    the first generated token); ``lengths`` [N] how many of a row's tokens were generated
    (T unless ``greedy_batch`` stopped the row after its first token; None: all T)."""

    tokens: torch.Tensor
    first_logits: torch.Tensor
    lengths: torch.Tensor | None = None

    def texts(self, tokenizer) -> list[str]:
        """Decoded generations, special tokens skipped (as the paper decodes)."""
        rows = self.tokens.tolist()
        if self.lengths is not None:
            rows = [row[:n] for row, n in zip(rows, self.lengths.tolist())]
        return [tokenizer.decode(row, skip_special_tokens=True) for row in rows]


@torch.inference_mode()
def greedy(adapter: ModelAdapter, ids: Sequence[Sequence[int]], *, max_new_tokens: int = 16,
           batch_size: int = 32, use_cache: bool = True, share_prefix: bool = False,
           log: Callable[[str], None] | None = None) -> Generations:
    """Greedy (argmax) continuation of each prompt (token ids, BOS included) for
    ``max_new_tokens`` steps. Prompts are left-padded in batches of similar length; position
    ids follow the attention mask, so a prompt's generation does not depend on its batch.
    ``share_prefix`` (with the cache): the tokens all prompts start with run once
    (``forward.grouped_batches``; the same up to float rounding)."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    ids = [list(x) for x in ids]
    n = len(ids)
    order = sorted(range(n), key=lambda i: -len(ids[i]))
    vocab = adapter.unembed_weight.shape[0]
    tokens = torch.empty((n, max_new_tokens), dtype=torch.long)
    first = torch.empty((n, vocab), dtype=torch.float32)
    progress = Progress(n, log, what="prompts") if log else None
    if share_prefix and use_cache:
        for batch in grouped_batches(adapter, ids, 1, lambda rows: None, batch_size=batch_size):
            out = greedy_grouped(adapter, batch, max_new_tokens=max_new_tokens)
            tokens[batch.prompts], first[batch.prompts] = out.tokens, out.first_logits
            if progress:
                progress.update(len(batch.prompts))
        return Generations(tokens, first)
    for start in range(0, n, batch_size):
        idx = order[start:start + batch_size]
        batch = greedy_batch(adapter, [ids[i] for i in idx], max_new_tokens=max_new_tokens, use_cache=use_cache)
        tokens[idx], first[idx] = batch.tokens, batch.first_logits
        if progress:
            progress.update(len(idx))
    return Generations(tokens, first)


@torch.inference_mode()
def greedy_batch(adapter: ModelAdapter, ids: Sequence[Sequence[int]], *, max_new_tokens: int,
                 use_cache: bool = True, continues: torch.Tensor | None = None,
                 on_rows: Callable[[torch.Tensor], None] | None = None) -> Generations:
    """``greedy`` on one left-padded batch, rows in the given order (for callers whose hooks
    hold per-row state).

    ``continues`` (bool [V], with the KV cache): a row whose first token ``t`` has
    ``continues[t]`` False stops after it (for a caller that knows how such a generation
    ends, e.g. ``refusal_starts``: it cannot be a refusal); ``lengths`` says which rows
    stopped. The other rows go on alone, and ``on_rows(kept)`` (the kept rows' indices in
    the batch) is called first, so that per-row hook state can follow them."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    input_ids, mask, pos = left_pad(ids, adapter.tokenizer.pad_token_id, adapter.device)
    if not use_cache:
        new, logits0 = _uncached(adapter.model, input_ids, mask, pos, max_new_tokens)
        return Generations(new.cpu(), logits0.float().cpu())
    new, logits0, lengths = _cached(adapter.model, input_ids, mask, pos, max_new_tokens, continues, on_rows)
    return Generations(new.cpu(), logits0.float().cpu(), lengths)


@torch.inference_mode()
def greedy_grouped(adapter: ModelAdapter, batch: GroupedBatch, *, max_new_tokens: int,
                   continues: torch.Tensor | None = None,
                   on_rows: Callable[[torch.Tensor], None] | None = None) -> Generations:
    """``greedy_batch`` (with the KV cache) on a batch of ``forward.grouped_batches``, whose
    prompts' shared start is already in its key/value cache."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    if batch.stand_in:
        raise ValueError("generation needs every block's key/value cache: no blocks may be stood in for")
    new, logits0, lengths = _cached(adapter.model, batch.input_ids, batch.attention_mask, batch.position_ids,
                                    max_new_tokens, continues, on_rows, past=batch.past)
    return Generations(new.cpu(), logits0.float().cpu(), lengths)


def _cached(model, input_ids, mask, pos, steps, continues=None, on_rows=None, past=None):
    """Greedy steps with the KV cache; ``past``: the cache of tokens before ``input_ids``
    (``mask`` covers them too)."""
    cached = {KV_CACHE: past} if past is not None else {}
    out = model(input_ids=input_ids, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1,
                **cached)
    logits = out.logits[:, -1]
    first, past = logits, kv_cache(out)
    n = input_ids.shape[0]
    new = torch.zeros((n, steps), dtype=torch.long, device=input_ids.device)
    rows = torch.arange(n, device=input_ids.device)  # the batch rows still generating
    lengths = None
    for t in range(steps):
        nxt = logits.argmax(-1)
        new[rows, t] = nxt
        if t == steps - 1:
            break
        if t == 0 and continues is not None:
            go = continues.to(nxt.device)[nxt]
            lengths = torch.where(go, steps, 1).cpu()
            if not go.all():
                kept = go.nonzero().flatten()
                if not len(kept):
                    break
                rows, nxt, mask, pos = rows[kept], nxt[kept], mask[kept], pos[kept]
                past.batch_select_indices(kept)
                if on_rows is not None:
                    on_rows(kept)
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
        pos = pos[:, -1:] + 1
        out = model(input_ids=nxt[:, None], attention_mask=mask, position_ids=pos, **{KV_CACHE: past},
                    use_cache=True, logits_to_keep=1)
        logits, past = out.logits[:, -1], kv_cache(out)
    if continues is not None and lengths is None:  # one step only
        lengths = torch.ones(n, dtype=torch.long)
    return new, first, lengths


def _uncached(model, input_ids, mask, pos, steps):
    new, first = [], None
    for _ in range(steps):
        logits = model(input_ids=input_ids, attention_mask=mask, position_ids=pos, use_cache=False,
                       logits_to_keep=1).logits[:, -1]
        first = logits if first is None else first
        nxt = logits.argmax(-1)
        new.append(nxt)
        input_ids = torch.cat([input_ids, nxt[:, None]], dim=1)
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
        pos = torch.cat([pos, pos[:, -1:] + 1], dim=1)
    return torch.stack(new, dim=1), first
