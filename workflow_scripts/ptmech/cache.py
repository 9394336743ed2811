"""The activation cache: one HDF5 file per (model, prompt set, dataset).

Layout of a cache file::

    resid      [N, K, P, d]  float16 (default) or float32; K residual indices, P positions
    input_ids  [N]           variable-length int32 token ids (no padding)
    length     [N]           int32 number of tokens
    row        [N]           int64 row of the prompt in results/data/{dataset}.tsv
    label/<column> [N]       the dataset's label columns
    text       [N]           the rendered prompt

Rows are stored in processing order (longest prompt first, so that batches are dense
and an out-of-memory error shows at once); ``row`` maps them back, and ``Cache``
returns everything in dataset order. ``resid`` is chunked one residual index per chunk
so that reading one layer over all prompts is one contiguous read per chunk.
Files are written under a temporary name and renamed into place only when complete.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import h5py
import numpy as np

from . import h5
from .io import atomic_path
from .progress import Progress

if TYPE_CHECKING:  # reading a cache needs no torch: only extract imports it
    import torch

    from .adapter import ModelAdapter

FORMAT = "ptmech-activations/1"
STORAGE_DTYPES = {"float16": np.float16, "float32": np.float32}


class CacheError(RuntimeError):
    pass


def extract(
    adapter: ModelAdapter,
    texts: Sequence[str],
    out_path: str | os.PathLike,
    *,
    positions: Sequence[int],
    layers: Sequence[int] | None = None,
    batch_size: int = 32,
    storage_dtype: str = "float16",
    labels: dict[str, np.ndarray] | None = None,
    rows: Sequence[int] | None = None,
    attrs: dict | None = None,
    log: Callable[[str], None] = print,
) -> None:
    """Run ``texts`` through the model and stream the residual stream at ``layers``
    (residual indices, default all 0..L) and negative ``positions`` to ``out_path``.

    Memory is one batch, whatever the number of prompts. A non-finite activation, in
    the compute dtype or after the cast to the storage dtype, is an error naming the
    prompt and the residual index."""
    import torch

    from .residual import left_pad, residual_at

    layers = list(range(adapter.n_layers + 1)) if layers is None else list(layers)
    positions = list(positions)
    np_dtype = STORAGE_DTYPES[storage_dtype]
    ids = adapter.encode(list(texts))
    lengths = np.array([len(x) for x in ids], dtype=np.int32)
    n, d = len(ids), adapter.d_model
    if n == 0:
        raise CacheError(f"{out_path}: no prompts to extract")
    short = np.flatnonzero(lengths < len(positions))
    if len(short):
        i = int(short[0])
        raise CacheError(
            f"prompt {i} ({texts[i]!r}) has {lengths[i]} tokens, fewer than the "
            f"{len(positions)} positions {positions} requested"
        )
    order = np.argsort(-lengths, kind="stable")
    rows = np.arange(n) if rows is None else np.asarray(rows)
    labels = labels or {}
    pad_id = adapter.tokenizer.pad_token_id
    device = adapter.device
    chunk_rows = min(batch_size, n)

    with atomic_path(out_path) as tmp, h5py.File(tmp, "w") as f:
        resid = f.create_dataset(
            "resid", shape=(n, len(layers), len(positions), d), dtype=np_dtype,
            chunks=(chunk_rows, 1, len(positions), d),
        )
        sorted_ids = np.empty(n, dtype=object)
        for j, i in enumerate(order):
            sorted_ids[j] = np.asarray(ids[i], dtype=np.int32)
        f.create_dataset("input_ids", data=sorted_ids, dtype=h5py.vlen_dtype(np.int32))
        f.create_dataset("length", data=lengths[order])
        f.create_dataset("row", data=rows[order])
        f.create_dataset("text", data=[texts[i] for i in order], dtype=h5py.string_dtype())
        for col, values in labels.items():
            f.create_dataset(f"label/{col}", data=np.asarray(values)[order])
        meta = {
            "format": FORMAT,
            "layers": layers,
            "positions": positions,
            **h5.provenance(adapter, storage_dtype),
            "complete": False,
            **(attrs or {}),
        }
        h5.write_attrs(f, meta)

        progress = Progress(n, log, what="prompts")
        with torch.inference_mode():
            for start in range(0, n, batch_size):
                idx = order[start:start + batch_size]
                batch = left_pad([ids[i] for i in idx], pad_id, device)
                acts = residual_at(adapter, *batch, layers=layers, positions=positions)
                _check_finite(acts, idx, layers, texts, "the model's compute dtype")
                stored = acts.float().cpu().numpy().astype(np_dtype)
                if np_dtype is not np.float32:
                    _check_finite(torch.from_numpy(stored), idx, layers, texts,
                                  f"{storage_dtype} storage (overflow; use storage_dtype float32)")
                resid[start:start + len(idx)] = stored
                progress.update(len(idx))
        f.attrs["complete"] = True
        f.attrs["seconds"] = progress.elapsed


def _check_finite(acts: torch.Tensor, idx, layers, texts, where: str) -> None:
    import torch

    bad = ~torch.isfinite(acts)
    if bad.any():
        b, k = (int(v) for v in bad.nonzero()[0][:2])
        i = int(idx[b])
        raise CacheError(
            f"non-finite activation in {where}: prompt {i} ({texts[i][:80]!r}), "
            f"residual index k={layers[k]}"
        )


# what a reader says after a cache it cannot use: Snakemake re-extracts a missing output
RECOVER = "; delete it and rerun snakemake, which extracts it again"


class Cache:
    """Read access to one cache file, in dataset row order.

    Opening checks that the file is a complete ptmech cache and, for each keyword in
    ``expect``, that the attribute has that value (e.g. ``expect={"model": "x"}``)."""

    def __init__(self, path: str | os.PathLike, expect: dict | None = None):
        self.path = Path(path)
        self._f = h5.open_checked(self.path, fmt=FORMAT, what="ptmech activation cache", datasets=("resid",),
                                  expect=expect, error=CacheError, recover=RECOVER)
        attrs = self._f.attrs
        self.attrs = dict(attrs)
        self.layers = [int(k) for k in attrs["layers"]]
        self.positions = [int(p) for p in attrs["positions"]]
        self._row = self._f["row"][:]
        self._inverse = np.argsort(self._row, kind="stable")

    def __enter__(self) -> "Cache":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._f.close()

    def __len__(self) -> int:
        return len(self._row)

    @property
    def rows(self) -> np.ndarray:
        return self._row[self._inverse]

    def resid(self, k: int, positions: Sequence[int] | int | None = None) -> np.ndarray:
        """float32 [N, P, d] at residual index ``k`` (or [N, d] for one position)."""
        if k not in self.layers:
            raise CacheError(f"{self.path}: residual index k={k} not cached (has {self.layers})")
        data = self._f["resid"][:, self.layers.index(k)]
        data = data[self._inverse].astype(np.float32)
        if positions is None:
            return data
        if isinstance(positions, int):
            return data[:, self._pos_index(positions)]
        return data[:, [self._pos_index(p) for p in positions]]

    def _pos_index(self, p: int) -> int:
        if p not in self.positions:
            raise CacheError(f"{self.path}: position {p} not cached (has {self.positions})")
        return self.positions.index(p)

    def label(self, column: str) -> np.ndarray:
        key = f"label/{column}"
        if key not in self._f:
            raise CacheError(f"{self.path}: no label column {column!r}")
        return self._f[key][:][self._inverse]

    def texts(self) -> list[str]:
        return [t.decode() if isinstance(t, bytes) else t for t in self._f["text"][:][self._inverse]]

    def input_ids(self) -> list[np.ndarray]:
        ids = self._f["input_ids"][:]
        return [ids[i] for i in self._inverse]

