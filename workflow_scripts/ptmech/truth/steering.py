"""Truth-direction steering (METHODS.md §4.5): add a truth direction to a live model's
residual stream at the statement's last tokens of a few-shot TRUE/FALSE query and read
how far P(" TRUE") - P(" FALSE") at the last position moves.

The paper's intervention: the vector ``v`` (``mu_T - mu_F`` at the probe layer) times a
coefficient is added to the residual at every k = ``intervene_k .. probe_k`` (the outputs of
blocks k - 1; the paper's blocks 8..12 are k = 9..13) at the
statement's final token (offset 0, the "." ) and the token before it (offset -1); it is
*subtracted* on true statements (pushing towards FALSE) and *added* on false ones. Nothing
is added at the `` This statement is:`` suffix.

Offsets count from the statement's last token within the query: 0 is that token, -1 the
one before, positive offsets reach into the suffix (1 = its first token).
"""

from __future__ import annotations

import random
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from ..adapter import ModelAdapter, block_output
from ..fewshot import SUFFIX, answer_token_ids, pick_demos, query
from ..forward import last_logits
from ..residual import hooked
from .tables import SUBSETS, steering_scores  # noqa: F401 (re-exported)


class SteeringError(ValueError):
    pass


# ---------------------------------------------------------------------- the prompts

def choose_demos(table: pd.DataFrame, n_demos: int = 4, seed: int = 1, what: str = "") -> list[tuple[str, int]]:
    """``n_demos`` demonstrations (half TRUE, half FALSE, TRUE getting the odd one) drawn
    with ``seed`` from the dataset's own statements, as the paper's per-dataset 4 demos."""
    pool = list(zip(table["statement"], table["label"].astype(int)))
    n_true = (n_demos + 1) // 2
    return pick_demos(pool, exclude=set(), n_true=n_true, n_false=n_demos - n_true, seed=seed, what=what)


def select_statements(table: pd.DataFrame, demos: Sequence[tuple[str, int]], limit: int | None = None) -> pd.DataFrame:
    """The statements to steer, in dataset order: never a demonstration (the paper skips
    statements that occur in the demos), and at most ``limit`` of them, half true and half
    false where possible. Keeps the dataset's row index."""
    shown = {s for s, _ in demos}
    rows = table[~table["statement"].isin(shown)]
    if limit is not None:
        true, false = rows[rows["label"] == 1], rows[rows["label"] == 0]
        n_true = min(len(true), max(limit // 2, limit - len(false)))
        n_false = min(len(false), limit - n_true)
        rows = rows.loc[sorted(true.index[:n_true].tolist() + false.index[:n_false].tolist())]
    if rows.empty:
        raise SteeringError("no statements left to steer")
    return rows


def few_shot_queries(statements: Sequence[str], rows: Sequence[int], demos: Sequence[tuple[str, int]],
                     seed: int = 1) -> list[str]:
    """One query per statement: the demos shuffled with ``random.Random(seed + row)`` (the
    paper's ``random.seed(1 + i)``), then the statement and the suffix."""
    out = []
    for s, r in zip(statements, rows):
        d = list(demos)
        random.Random(seed + int(r)).shuffle(d)
        out.append(query(d, s))
    return out


def encode_queries(adapter: ModelAdapter, queries: Sequence[str]) -> tuple[list[list[int]], list[int]]:
    """Token ids of each query and the number of tokens after the statement's last token
    (the suffix length), found by encoding the query without its suffix: its ids must be a
    prefix of the query's."""
    full = adapter.encode(list(queries))
    bare = adapter.encode([q[: -len(SUFFIX)] if q.endswith(SUFFIX) else q for q in queries])
    suffix = []
    for q, f, b in zip(queries, full, bare):
        if not q.endswith(SUFFIX) or f[: len(b)] != b or len(f) == len(b):
            raise SteeringError(f"cannot locate the statement's last token in {q[-120:]!r}: the tokenizer "
                                f"merges the statement with {SUFFIX!r}")
        suffix.append(len(f) - len(b))
    return full, suffix


# --------------------------------------------------------------------- the forward pass

def add_vector(positions: Sequence[int], vector: torch.Tensor):
    """A forward hook adding ``vector`` [d] to a block's output at the negative
    ``positions`` of every row."""
    pos = list(positions)

    def hook(module, args, output):
        h = block_output(output).clone()
        h[:, pos] += vector
        return (h, *output[1:]) if isinstance(output, tuple) else h

    return hook


def p_true_false(
    adapter: ModelAdapter,
    ids: Sequence[Sequence[int]],
    suffix_lengths: Sequence[int],
    signs: Sequence[int],
    vector: np.ndarray | torch.Tensor | None = None,
    ks: Sequence[int] = (),
    offsets: Sequence[int] = (0, -1),
    coefficient: float = 1.0,
    batch_size: int = 16,
    multi_token: str = "first",
) -> np.ndarray:
    """[N, 2] P(" TRUE") and P(" FALSE") (softmax over the whole vocabulary; their first
    tokens where the tokenizer splits them, per ``multi_token``) at each
    query's last token, with ``sign * coefficient * vector`` added to the residual at each
    index k in ``ks`` (1..L: the output of block k - 1) at the statement-relative
    ``offsets`` (no vector: the baseline).

    ``signs`` [N]: +1 adds, -1 subtracts. Queries are run in groups of equal (sign, suffix
    length) whatever ``vector`` is, so the baseline and a zero vector batch identically."""
    t_id, f_id = answer_token_ids(adapter.tokenizer, multi_token)
    ids, suffix_lengths, signs = list(ids), np.asarray(suffix_lengths), np.asarray(signs)
    if not len(ids) == len(suffix_lengths) == len(signs):
        raise SteeringError("ids, suffix_lengths and signs differ in length")
    if vector is not None:
        vector = torch.as_tensor(np.asarray(vector), dtype=torch.float32)
        if vector.shape != (adapter.d_model,):
            raise SteeringError(f"steering vector of shape {tuple(vector.shape)} for a model of width {adapter.d_model}")
        bad = [k for k in ks if not 1 <= k <= adapter.n_layers]
        if bad:
            raise SteeringError(f"residual indices k = {bad} outside the block outputs 1..{adapter.n_layers}")
    out = np.empty((len(ids), 2), dtype=np.float64)
    for sign in sorted(set(signs.tolist())):
        for s in sorted(set(suffix_lengths[signs == sign].tolist())):
            idx = np.flatnonzero((signs == sign) & (suffix_lengths == s))
            regs = []
            if vector is not None:
                positions = [-(s + 1) + o for o in offsets]
                if any(p >= 0 for p in positions):
                    raise SteeringError(f"offsets {list(offsets)} reach past the query's end (suffix of {s} tokens)")
                v = (sign * coefficient * vector).to(adapter.device, adapter.dtype)
                regs = [(adapter.blocks[k - 1], "forward", add_vector(positions, v)) for k in ks]
            with hooked(regs):
                logits = last_logits(adapter, ids=[ids[i] for i in idx], batch_size=batch_size)
            probs = torch.softmax(logits.double(), dim=-1)
            out[idx, 0] = probs[:, t_id].numpy()
            out[idx, 1] = probs[:, f_id].numpy()
    return out


def signs_for(labels: Sequence[int]) -> np.ndarray:
    """The paper's directionality: subtract (-1) on true statements, add (+1) on false."""
    return np.where(np.asarray(labels) == 1, -1, 1)
