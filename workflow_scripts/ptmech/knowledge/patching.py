"""Knowledge: activation patching (causal tracing) within and across models (METHODS.md §3).

For a pair (true statement, false statement) rendered as the same few-shot query, the
*true* run's output of decoder block ``l`` at position ``-t`` replaces the *false* run's
at that one cell, and the logit difference ``LD = logit(" TRUE") - logit(" FALSE")`` at
the last position is read. Over the grid of cells (every block, the last ``T`` positions)
this shows where the model recalls the fact. Cross-model patching takes the true run from
a source model A and patches it into a target model B of the same family (same
tokenizer): A's activations come from a file (``write_sources``), so only B is loaded.

Layer convention: files and tables index layers by the residual index ``k`` (ptmech.layers):
patching replaces the output of block ``k - 1`` (the paper's "layer k - 1"), so their layer
axis is ``k = 1..L``; the code below hooks blocks, and says so. Position axes run over the last ``T`` positions, earliest first:
index ``j`` is position ``j - T`` (the last entry is the last token, ``-1``).

The grid of one pair runs batched (``patch_grid``): the false prompt is replicated, row
``i`` of a chunk is patched at its own cell by a forward hook on that cell's block, and
what every row shares with the clean false run is taken from one clean pass instead of
being recomputed: the key/value cache of the tokens before the chunk's earliest patched
position and the outputs of the blocks below its lowest patched block.

The metric is LD = logit(answer) - logit(alternative) at the last position: (" TRUE",
" FALSE") for the paper's question, or per pair the two runs' top tokens for completion
queries (``completion_answers``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterator, Sequence

import h5py
import numpy as np
import torch

from ..adapter import KV_CACHE, ModelAdapter, block_output, kv_cache, repeat_cache, repeat_rows
from .. import h5
from ..fewshot import answer_token_ids
from ..forward import last_logits
from ..io import atomic_path
from ..progress import Progress
from ..residual import hooked, left_pad, skipped_blocks
from .results import K_AXIS, PATCHING_FORMAT, PatchingError, read_patching, write_patching  # noqa: F401 (re-exported)

SOURCES_FORMAT = "ptmech-patch-sources/1"


# ------------------------------------------------------------------------------ the metric

def answer_ids(tokenizer, multi_token: str = "first") -> tuple[int, int]:
    """The (TRUE, FALSE) token ids the LD compares (``fewshot.answer_token_ids``)."""
    return answer_token_ids(tokenizer, multi_token)


def per_prompt(answers, n: int) -> list[tuple[int, int]]:
    """``answers`` as one (answer, alternative) token pair per prompt: one pair for all
    (the TRUE/FALSE question) or already one per prompt (completions)."""
    if len(answers) == 2 and all(isinstance(a, (int, np.integer)) for a in answers):
        return [(int(answers[0]), int(answers[1]))] * n
    if len(answers) != n:
        raise PatchingError(f"{len(answers)} answer pairs for {n} prompts")
    return [(int(a), int(b)) for a, b in answers]


def logit_diff(logits: torch.Tensor, answers) -> torch.Tensor:
    """float32 [N]: logit(answer) - logit(alternative) of each row of [N, V] logits;
    ``answers`` is one (answer, alternative) pair for all rows or one per row."""
    a = torch.as_tensor(per_prompt(answers, len(logits)), device=logits.device)
    return (logits.gather(1, a[:, :1]) - logits.gather(1, a[:, 1:])).squeeze(1).float()


def hidden_logit_diff(adapter: ModelAdapter, hidden: torch.Tensor, answers) -> torch.Tensor:
    """float32 [N]: what ``logit_diff`` gives on the head's logits of the final hidden
    states ``hidden`` [N, d] (the backbone's output, final norm applied), from the two
    unembedding rows each row needs instead of all V: exact for a linear head with or
    without bias and for the model's elementwise logit rescaling (``rescale_logits``: Gemma 2's
    soft-capping, Cohere's and Granite's scales). The full unembedding of [N, d] rows is most
    of a patching pass's time for a large vocabulary."""
    a = torch.as_tensor(per_prompt(answers, len(hidden)), device=hidden.device)  # [N, 2]
    logits = torch.einsum("nd,nkd->nk", hidden, adapter.unembed_weight[a])
    bias = getattr(adapter.unembed, "bias", None)
    if bias is not None:
        logits = logits + bias[a]
    logits = adapter.rescale_logits(logits)
    return (logits[:, 0] - logits[:, 1]).float()


def clean_logit_diffs(adapter: ModelAdapter, ids: Sequence[Sequence[int]], answers,
                      batch_size: int = 32) -> np.ndarray:
    """float32 [N]: the unpatched LD of each prompt."""
    return logit_diff(last_logits(adapter, ids=ids, batch_size=batch_size), answers).numpy()


def top_tokens(adapter: ModelAdapter, ids: Sequence[Sequence[int]], batch_size: int = 32) -> np.ndarray:
    """int64 [N]: each prompt's most likely next token (the completion query's answer)."""
    return last_logits(adapter, ids=ids, batch_size=batch_size).argmax(-1).numpy()


# ------------------------------------------------------------------------------ the true run

@torch.inference_mode()
def true_runs(adapter: ModelAdapter, ids: Sequence[Sequence[int]], n_positions: int,
              batch_size: int = 32) -> Iterator[tuple[np.ndarray, torch.Tensor, torch.Tensor]]:
    """Run prompts (left-padded batches) and yield, per batch, the prompt indices, every
    block's output at the last ``n_positions`` positions ``[B, L, T, d]`` (model dtype, on
    the CPU) and the logits at the last position ``[B, V]`` (float32, CPU)."""
    if min(len(x) for x in ids) < n_positions:
        raise PatchingError(f"a prompt is shorter than the {n_positions} patched positions")
    L = adapter.n_layers
    for start in range(0, len(ids), batch_size):
        idx = np.arange(start, min(start + batch_size, len(ids)))
        batch = left_pad([ids[i] for i in idx], adapter.tokenizer.pad_token_id, adapter.device)
        acts: list[torch.Tensor | None] = [None] * L

        def grab(m, a, o, l):
            acts[l] = block_output(o)[:, -n_positions:].detach()

        regs = [(adapter.blocks[l], "forward", lambda m, a, o, l=l: grab(m, a, o, l)) for l in range(L)]
        with hooked(regs):
            logits = adapter.model(input_ids=batch[0], attention_mask=batch[1], position_ids=batch[2],
                                   use_cache=False, logits_to_keep=1).logits[:, -1]
        yield idx, torch.stack(acts, dim=1).cpu(), logits.float().cpu()


# ------------------------------------------------------------------------------ patching

def _patch_hook(rows: torch.Tensor, pos: torch.Tensor, values: torch.Tensor) -> Callable:
    """A forward hook writing ``values[i]`` into the block output at (``rows[i]``, ``pos[i]``)."""

    def hook(module, args, output):
        h = block_output(output).clone()
        # to the block's own device: with device_map="auto" blocks live on several GPUs
        h[rows.to(h.device), pos.to(h.device)] = values.to(h.device, h.dtype)
        return (h, *output[1:]) if isinstance(output, (tuple, list)) else h

    return hook


def grid_chunks(n_positions: int, n_layers: int, batch_size: int) -> list[list[tuple[int, int]]]:
    """The (position index, block) cells of a grid in chunks of at most ``batch_size``:
    rectangles of ``a`` positions x ``b`` blocks, a * b <= batch_size, shaped so that a
    chunk's earliest position and lowest block (which set its cost, see ``patch_grid``)
    are as late as possible. One chunk when the whole grid fits."""
    T, L, B = n_positions, n_layers, max(1, batch_size)
    if T * L <= B:
        a, b = T, L
    else:
        a = min(T, max(1, round((B * T / L) ** 0.5)))
        b = min(L, max(1, B // a))
        a = min(T, max(1, B // b))
    return [[(j, l) for j in range(j0, min(j0 + a, T)) for l in range(l0, min(l0 + b, L))]
            for j0 in range(0, T, a) for l0 in range(0, L, b)]


@torch.inference_mode()
def clean_run(adapter: ModelAdapter, ids: torch.Tensor, n_positions: int):
    """One unpatched pass of prompts ``ids`` [M, S] (one length, no padding): their
    key/value cache, every block's output at the last ``n_positions`` positions (a list of
    L [M, T, d] tensors), and the last logits [M, V]. ``patch_grids`` reuses the first two."""
    outputs: list[torch.Tensor | None] = [None] * adapter.n_layers
    plain = True

    def grab(m, a, o, l):
        nonlocal plain
        plain &= isinstance(o, torch.Tensor)
        outputs[l] = block_output(o)[:, -n_positions:]

    regs = [(adapter.blocks[l], "forward", lambda m, a, o, l=l: grab(m, a, o, l)) for l in range(adapter.n_layers)]
    with hooked(regs):
        out = adapter.model(input_ids=ids, use_cache=True, logits_to_keep=1)
    # blocks can be skipped only where a block's output is a bare tensor (transformers 5)
    return kv_cache(out), (outputs if plain else None), out.logits[:, -1]


@torch.inference_mode()
def patch_grid(adapter: ModelAdapter, false_ids: Sequence[int], source_acts: torch.Tensor,
               answers: tuple[int, int], *, batch_size: int = 64, reuse_clean_run: bool = True) -> torch.Tensor:
    """LD (logit(answers[0]) - logit(answers[1])) of the false prompt with each (block,
    position) cell patched, batched: ``patch_grids`` of one pair.

    ``source_acts``: [L, T, d] block outputs of the true run at positions -T..-1.
    Returns float32 [T, L]: entry [j, l] is the LD with block l's output at position
    j - T replaced by ``source_acts[l, j]``."""
    return patch_grids(adapter, [false_ids], [source_acts], [answers], batch_size=batch_size,
                       reuse_clean_run=reuse_clean_run)[0]


# a pass of patch_grids holds at least this many cells of each of its pairs
MIN_TILE = 8


@torch.inference_mode()
def patch_grids(adapter: ModelAdapter, false_ids: Sequence[Sequence[int]], source_acts: Sequence[torch.Tensor],
                answers: Sequence[tuple[int, int]], *, batch_size: int = 64,
                reuse_clean_run: bool = True) -> list[torch.Tensor]:
    """``patch_grid`` of M pairs whose false prompts have the same length, their rows
    sharing passes: float32 [T, L] per pair.

    Each pair's false prompt is replicated, one row per cell; a pass runs one tile of cells
    (``grid_chunks`` of at most ``batch_size // M`` cells) for every pair, row ``m * n + i``
    patched at cell i of pair m by a forward hook on its block. Everything a tile's rows
    share with their pair's clean false run is taken from one clean pass of all M prompts
    (``reuse_clean_run``): the key/value cache of the tokens before the tile's earliest
    patched position (only the tokens from there on are run), and the outputs of the blocks
    below its lowest patched block (those blocks are skipped). The last hidden state meets
    only the two answer rows of the unembedding (``hidden_logit_diff``). Rows are otherwise
    independent, so the result equals one forward pass per cell (up to float rounding)."""
    M = len(false_ids)
    if not M:
        return []
    L, T = source_acts[0].shape[:2]
    if L != adapter.n_layers or any(a.shape[:2] != (L, T) for a in source_acts):
        raise PatchingError(f"source activations have {L} blocks and {T} positions per pair, model "
                            f"{adapter.name!r} has {adapter.n_layers} blocks")
    S = len(false_ids[0])
    if any(len(x) != S for x in false_ids):
        raise ValueError("patch_grids needs false prompts of one length (patch_pairs groups them)")
    if S < T:
        raise PatchingError(f"the false prompt has {S} tokens, fewer than the {T} patched positions")
    device = adapter.device
    ids = torch.as_tensor([list(x) for x in false_ids], device=device)
    acts = torch.stack([a.to(device) for a in source_acts])  # [M, L, T, d]
    cache, clean_outputs = (clean_run(adapter, ids, T)[:2] if reuse_clean_run else (None, None))
    out = torch.empty((M, T, L), dtype=torch.float32)
    pair_answers = list(answers)
    prefixes: dict = {}  # the rows' prefix cache of the current start (chunks of one start come in a row)
    for chunk in grid_chunks(T, L, max(1, batch_size // M)):
        n = len(chunk)
        j0, l0 = min(j for j, _ in chunk), min(l for _, l in chunk)
        start = S - T + j0 if reuse_clean_run else 0
        kwargs: dict = {"use_cache": False}
        if start > 0:
            if (start, n) not in prefixes:
                prefixes = {(start, n): repeat_cache(cache, n, length=start)}
            kwargs = {KV_CACHE: repeat_cache(prefixes[start, n], 1), "use_cache": True}
        stand_in = [repeat_rows(clean_outputs[l0 - 1][:, j0:], n)] * l0 if clean_outputs and l0 else []
        regs = []
        for l in sorted({l for _, l in chunk}):
            cells = [i for i, (_, ll) in enumerate(chunk) if ll == l]
            js = [chunk[i][0] for i in cells]
            rows = torch.as_tensor([m * n + i for m in range(M) for i in cells], device=device)
            pos = torch.as_tensor([S - T + j - start for j in js] * M, device=device)
            regs.append((adapter.blocks[l], "forward", _patch_hook(rows, pos, acts[:, l, js].reshape(-1, acts.shape[-1]))))
        with hooked(regs), skipped_blocks(adapter.blocks, stand_in):
            hidden = adapter.backbone(
                input_ids=repeat_rows(ids[:, start:], n),
                attention_mask=torch.ones((M * n, S), dtype=torch.long, device=device),
                position_ids=torch.arange(start, S, device=device).expand(M * n, -1),
                **kwargs,
            ).last_hidden_state[:, -1]
        row_answers = [a for a in pair_answers for _ in range(n)]
        js, ls = zip(*chunk)
        out[:, list(js), list(ls)] = hidden_logit_diff(adapter, hidden, row_answers).cpu().view(M, n)
    return list(out)


@torch.inference_mode()
def patch_grid_loop(adapter: ModelAdapter, false_ids: Sequence[int], source_acts: torch.Tensor,
                    answers: tuple[int, int]) -> torch.Tensor:
    """The reference for ``patch_grid``: one full forward pass of the false prompt per
    cell, as the paper's code runs it. float32 [T, L]."""
    L, T = source_acts.shape[:2]
    S = len(false_ids)
    ids = torch.as_tensor([list(false_ids)], device=adapter.device)
    acts = source_acts.to(adapter.device)
    out = torch.empty((T, L), dtype=torch.float32)
    one = torch.zeros(1, dtype=torch.long, device=adapter.device)
    for j in range(T):
        for l in range(L):
            hook = _patch_hook(one, one + S - T + j, acts[l, j:j + 1])
            with hooked([(adapter.blocks[l], "forward", hook)]):
                logits = adapter.model(input_ids=ids, use_cache=False, logits_to_keep=1).logits[:, -1]
            out[j, l] = logit_diff(logits, answers)[0]
    return out


def patch_pairs(adapter: ModelAdapter, pairs: Sequence[dict], source_acts: Callable[[int], torch.Tensor],
                answers, *, batch_size: int = 64, reuse_clean_run: bool = True,
                log: Callable[[str], None] = print) -> np.ndarray:
    """float32 [P, T, L]: the patching grid of each pair's false prompt (``patch_grids``,
    pairs of one prompt length sharing passes, ``pair_groups``), with the true run's
    activations ``source_acts(i)`` ([L, T, d]) of pair ``i``; ``answers`` is one
    (answer, alternative) token pair for all pairs or one per pair."""
    answers = per_prompt(answers, len(pairs))
    progress = Progress(len(pairs), log, what="pairs")
    out: list = [None] * len(pairs)
    for group in pair_groups(pairs, batch_size):
        grids = patch_grids(adapter, [pairs[i]["false_ids"] for i in group], [source_acts(i) for i in group],
                            [answers[i] for i in group], batch_size=batch_size, reuse_clean_run=reuse_clean_run)
        for i, grid in zip(group, grids):
            out[i] = grid.numpy()
        progress.update(len(group))
    return np.stack(out)


def pair_groups(pairs: Sequence[dict], batch_size: int) -> list[list[int]]:
    """Indices of pairs whose false prompts have the same length, at most ``batch_size //
    MIN_TILE`` a group (so a pass holds a tile of at least ``MIN_TILE`` cells of each), in
    the order of their first pair."""
    by_length: dict[int, list[int]] = {}
    for i, p in enumerate(pairs):
        by_length.setdefault(len(p["false_ids"]), []).append(i)
    size = max(1, batch_size // MIN_TILE)
    return [g[s:s + size] for g in by_length.values() for s in range(0, len(g), size)]


def completion_answers(true_top: Sequence[int], false_top: Sequence[int]) -> list[tuple[int, int]]:
    """The completion query's (answer, alternative) per pair, as the paper's no-question
    mode: the source model's top token on the true prompt and the target model's top
    token on the false prompt."""
    return [(int(a), int(b)) for a, b in zip(true_top, false_top)]


def single_model_patching(adapter: ModelAdapter, pairs: Sequence[dict], n_positions: int, answers=None,
                          *, batch_size: int = 64, log: Callable[[str], None] = print) -> np.ndarray:
    """float32 [P, T, L]: patching within one model, its true runs computed live.
    ``answers`` None: completion queries (``completion_answers`` of the model's own top
    tokens)."""
    acts, true_top = {}, {}
    for idx, a, logits in true_runs(adapter, [p["true_ids"] for p in pairs], n_positions, batch_size):
        for b, i in enumerate(idx):
            acts[int(i)], true_top[int(i)] = a[b], int(logits[b].argmax())
    if answers is None:
        false_top = top_tokens(adapter, [p["false_ids"] for p in pairs], batch_size)
        answers = completion_answers([true_top[i] for i in range(len(pairs))], false_top)
    return patch_pairs(adapter, pairs, acts.__getitem__, answers, batch_size=batch_size, log=log)


# ------------------------------------------------------------------------------ source files

STORAGE_DTYPES = {"float16": np.float16, "float32": np.float32}


def resolve_storage_dtype(storage_dtype: str, compute_dtype: torch.dtype) -> str:
    """``auto``: float16 for a 16-bit model (lossless for bfloat16 values within float16's
    range), float32 for a float32 model (lossless)."""
    if storage_dtype == "auto":
        return "float16" if compute_dtype in (torch.float16, torch.bfloat16) else "float32"
    if storage_dtype not in STORAGE_DTYPES:
        raise ValueError(f"storage_dtype must be auto, float16 or float32, got {storage_dtype!r}")
    return storage_dtype


def write_sources(adapter: ModelAdapter, pairs: Sequence[dict], path: str | os.PathLike, *,
                  n_positions: int, answers: tuple[int, int] | None, batch_size: int = 32,
                  storage_dtype: str = "auto", attrs: dict | None = None,
                  log: Callable[[str], None] = print) -> None:
    """The patching source file of one model on one dataset's pairs (METHODS.md §3.6):

    ``true_resid`` [P, L, T, d]  the true run at k = 1..L (every block output), positions -T..-1
    ``true_top`` / ``false_top`` [P] int64  the model's most likely next token on each prompt
    ``true_ld`` / ``false_ld`` [P] float32  the model's clean LDs on the pair's prompts, for
        ``answers`` (TRUE, FALSE) or, when None (completion queries), for this model's own
        ``completion_answers``

    Written under a temporary name and renamed when complete. A non-finite activation
    (in compute or storage dtype) is an error."""
    storage_dtype = resolve_storage_dtype(storage_dtype, adapter.dtype)
    np_dtype = STORAGE_DTYPES[storage_dtype]
    P, L, d = len(pairs), adapter.n_layers, adapter.d_model
    if P == 0:
        raise PatchingError(f"{path}: no pairs")
    false_logits = last_logits(adapter, ids=[p["false_ids"] for p in pairs], batch_size=batch_size)
    false_top = false_logits.argmax(-1).numpy()
    true_top = np.empty(P, dtype=np.int64)
    true_logits = []
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        resid = f.create_dataset("true_resid", shape=(P, L, n_positions, d), dtype=np_dtype,
                                 chunks=(1, L, n_positions, d))
        progress = Progress(P, log, what="true prompts")
        for idx, acts, logits in true_runs(adapter, [p["true_ids"] for p in pairs], n_positions, batch_size):
            stored = acts.float().numpy().astype(np_dtype)
            if not (np.isfinite(acts.float().numpy()).all() and np.isfinite(stored).all()):
                raise PatchingError(f"{path}: non-finite activation for pairs {idx[0]}..{idx[-1]} "
                                    f"(compute dtype {adapter.dtype}, storage {storage_dtype}; try storage_dtype float32)")
            resid[idx[0]:idx[-1] + 1] = stored
            true_top[idx] = logits.argmax(-1).numpy()
            true_logits.append(logits)
            progress.update(len(idx))
        per_pair = completion_answers(true_top, false_top) if answers is None else per_prompt(answers, P)
        f["true_top"], f["false_top"] = true_top, false_top
        f["true_ld"] = logit_diff(torch.cat(true_logits), per_pair).numpy()
        f["false_ld"] = logit_diff(false_logits, per_pair).numpy()
        h5.write_attrs(f, {
            "format": SOURCES_FORMAT,
            **h5.provenance(adapter, storage_dtype),
            "positions": list(range(-n_positions, 0)),
            "layer_axis": K_AXIS,
            "k": list(range(1, L + 1)),
            "answer_ids": list(answers) if answers is not None else "completion: true_top vs false_top",
            "seconds": progress.elapsed,
            **(attrs or {}),
            "complete": True,
        })


class Sources:
    """Read access to a patching source file. Opening checks that it is complete and,
    for each ``expect`` keyword, that the attribute has that value; a mismatch names
    both sides (e.g. the source's and the target's prompt-token hash)."""

    def __init__(self, path: str | os.PathLike, expect: dict | None = None, what: str = ""):
        self.path = Path(path)
        self._f = h5.open_checked(self.path, fmt=SOURCES_FORMAT, what="patching source file", datasets=("true_resid",),
                                  expect=expect, error=PatchingError, context=what)
        a = self._f.attrs
        self.attrs = dict(a)
        self.true_ld = self._f["true_ld"][:]
        self.false_ld = self._f["false_ld"][:]
        self.true_top = self._f["true_top"][:]
        self.false_top = self._f["false_top"][:]

    def __enter__(self) -> "Sources":
        return self

    def __exit__(self, *exc) -> None:
        self._f.close()

    def __len__(self) -> int:
        return self._f["true_resid"].shape[0]

    def true_resid(self, i: int) -> torch.Tensor:
        """float32 [L, T, d]: the true run's block outputs of pair ``i``."""
        return torch.from_numpy(self._f["true_resid"][i].astype(np.float32))


# ------------------------------------------------------------------------------ results
