"""Refusal candidate directions from the cache, and their cosines: plain arrays, no torch
(METHODS.md 5). ``ptmech.refusal.directions`` scores and steers with them (and re-exports
these); table, figure and candidate jobs import them from here so that they load no model
library."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..data import instruction_splits


def split_rows(splits: np.ndarray, split: str, limit: int | None = None, what: str = "") -> np.ndarray:
    """Dataset-order indices of the first ``limit`` rows of ``split`` (all if None)."""
    rows = np.flatnonzero(np.asarray(splits) == split)
    if len(rows) == 0:
        raise ValueError(f"{what or 'dataset'}: no rows in split {split!r} (splits present: "
                         f"{sorted(set(np.asarray(splits).tolist()))})")
    return rows[:limit] if limit else rows


@dataclass
class Candidates:
    """Difference-of-means candidates: ``mean_diff`` [K, P, d] float32 (harmful minus
    harmless, not normalised) at residual indices ``k`` [K] and positions [P]."""

    mean_diff: np.ndarray
    k: list[int]
    positions: list[int]

    def direction(self, k: int, position: int) -> np.ndarray:
        """The unnormalised mean difference [d] at (k, position)."""
        if k not in self.k or position not in self.positions:
            raise KeyError(f"no candidate at k={k}, position={position} (have k {self.k}, positions "
                           f"{self.positions})")
        return self.mean_diff[self.k.index(k), self.positions.index(position)]

    def save(self, path, **meta) -> None:
        np.savez(path, mean_diff=self.mean_diff, k=np.asarray(self.k), positions=np.asarray(self.positions),
                 **{key: np.asarray(v) for key, v in meta.items()})

    @classmethod
    def load(cls, path) -> "Candidates":
        with np.load(path) as f:
            return cls(f["mean_diff"], [int(k) for k in f["k"]], [int(p) for p in f["positions"]])


def mean_difference(harmful: np.ndarray, harmless: np.ndarray) -> np.ndarray:
    """mean(harmful) - mean(harmless) over the first axis: [N, ...] , [M, ...] -> [...]."""
    return harmful.astype(np.float64).mean(0).astype(np.float32) - harmless.astype(np.float64).mean(0).astype(np.float32)


def candidate_directions(harmful_cache, harmless_cache, harmful_rows: np.ndarray,
                         harmless_rows: np.ndarray) -> Candidates:
    """Difference of means at every residual index and position both caches hold
    (``ptmech.cache.Cache`` objects; ``*_rows`` index the caches in dataset order)."""
    if harmful_cache.positions != harmless_cache.positions:
        raise ValueError(f"harmful and harmless caches hold different positions: "
                         f"{harmful_cache.positions} vs {harmless_cache.positions}")
    ks = [k for k in harmful_cache.layers if k in harmless_cache.layers]
    diffs = [mean_difference(harmful_cache.resid(k)[harmful_rows], harmless_cache.resid(k)[harmless_rows])
             for k in ks]
    return Candidates(np.stack(diffs), ks, list(harmful_cache.positions))


def candidates_from_caches(harmful_path, harmless_path, harmful_table: pd.DataFrame, harmless_table: pd.DataFrame,
                           *, split_fractions: dict[str, float], split_seed: int = 42,
                           n_train: int | None = 128) -> tuple[Candidates, dict]:
    """Candidates from the first ``n_train`` train-split rows of each dataset (the paper:
    the first 128), read from the two cache files. Also returns the counts used."""
    from ..cache import Cache

    rows = {}
    with Cache(harmful_path) as harmful, Cache(harmless_path) as harmless:
        for name, cache, table in (("harmful", harmful, harmful_table), ("harmless", harmless, harmless_table)):
            if len(cache) != len(table) or not np.array_equal(cache.rows, np.arange(len(table))):
                raise ValueError(f"{cache.path}: the cache holds {len(cache)} rows but the {name} dataset table "
                                 f"has {len(table)}; the cache is stale (re-extract it)")
            splits = instruction_splits(table, split_fractions, split_seed)
            rows[name] = split_rows(splits, "train", n_train, what=f"{name} instructions")
        candidates = candidate_directions(harmful, harmless, rows["harmful"], rows["harmless"])
    return candidates, {"n_harmful": len(rows["harmful"]), "n_harmless": len(rows["harmless"])}


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """cos(a, b); NaN when either is zero (e.g. a template token's embedding, k = 0)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    norms = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / norms) if norms > 0 else float("nan")


def direction_cosines(a: Candidates, b: Candidates, position_a: int, position_b: int) -> pd.DataFrame:
    """cos(r_a(k), r_b(k)) at every residual index k both hold, each model's direction read
    at its own position (templates differ between models). Columns ``k``, ``cosine``."""
    ks = [k for k in a.k if k in b.k]
    return pd.DataFrame({"k": ks, "cosine": [cosine(a.direction(k, position_a), b.direction(k, position_b))
                                              for k in ks]})
