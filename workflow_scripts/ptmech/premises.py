"""Premises: the conditions under which a result means what its table or figure suggests.

Every analysis rests on one: a refusal direction that passed the selection filters, a model
that refuses harmful requests before one ablates its refusal, a clean true / false logit gap
larger than its noise before patching effects are read as fractions of it, entropy neurons
that stand out from the other neurons of their layer. When the premise fails the numbers are
still computed, and each check here returns a short reason ("" when the premise holds),
which the tables carry in a ``premise`` column and the report lists first (METHODS.md 8).

Pure numpy / pandas (no torch): the table rules call it.
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

COLUMN = "premise"
# The thresholds are the config's premises section (config.schema.yaml has the defaults).


def joined(reasons: Iterable[str]) -> str:
    """Reasons joined with "; ", empty ones dropped, each once."""
    out: list[str] = []
    for r in reasons:
        if r and r not in out:
            out.append(r)
    return "; ".join(out)


# --- refusal --------------------------------------------------------------------------------
def refusal_direction(rule: str) -> str:
    """The selection's ``rule`` (``refusal.directions.select_direction``) names a fallback when no
    candidate passed the filters."""
    if rule.startswith("fallback"):
        return "no refusal direction passed the selection filters (fallback direction)"
    return ""


def refusal_baseline(rate: float, minimum: float) -> str:
    """Ablation can only show refusal removed where the model refuses to begin with."""
    if not np.isfinite(rate):
        return ""
    if rate < minimum:
        return f"baseline refusal {rate:.2f} of harmful prompts < {minimum:g}: too low to ablate"
    return ""


# --- knowledge ------------------------------------------------------------------------------
def gap_t(true_ld: Sequence[float], false_ld: Sequence[float]) -> float:
    """The paired t statistic of a run's clean logit gap: with d_i = true - false logit
    difference of pair i, mean(d) / (sd(d) / sqrt(n)); NaN for fewer than two pairs."""
    d = np.asarray(true_ld, dtype=float) - np.asarray(false_ld, dtype=float)
    if len(d) < 2:
        return float("nan")
    mean, sd = float(d.mean()), float(d.std(ddof=1))
    if sd == 0:
        return math.copysign(math.inf, mean) if mean else 0.0
    return mean / (sd / math.sqrt(len(d)))


def logit_gap(t: float, min_t: float) -> str:
    """Patching effects are read against the clean gap between a pair's true and false
    statements; the premise is a gap well above its noise, ``gap_t`` at least ``min_t``."""
    if math.isnan(t):
        return "fewer than two pairs: no noise estimate for the clean logit gap"
    if not t >= min_t:
        return f"clean logit gap within noise (paired t < {min_t:g})"
    return ""


# --- confidence -----------------------------------------------------------------------------
def robust_z(values: np.ndarray) -> np.ndarray:
    """(x - median) / (1.4826 MAD): a z score that outliers do not inflate."""
    x = np.asarray(values, dtype=float)
    med = np.median(x)
    mad = 1.4826 * np.median(np.abs(x - med))
    return (x - med) / mad if mad > 0 else np.zeros_like(x)


def entropy_z(logit_var: np.ndarray, selected: Sequence[int]) -> float:
    """The median robust z of log(logit_var) of the ``selected`` neurons (rows) among all
    of the layer's neurons."""
    z = robust_z(np.log(np.asarray(logit_var, dtype=float)))
    return float(np.median(z[np.asarray(selected, dtype=int)]))


def entropy_outliers(z: float, max_z: float) -> str:
    """Entropy neurons write into a near-null space of the unembedding: their logit
    variance should stand out, far below the layer's other neurons; the premise is an
    ``entropy_z`` of at most ``max_z``."""
    if not z <= max_z:
        return f"entropy neurons are not outliers (median robust z of log logit variance > {max_z:g})"
    return ""


def entropy_premise(logit_var: np.ndarray, selected: Sequence[int], max_z: float) -> str:
    """``entropy_outliers`` of the ``selected`` rows of a layer's ``logit_var``."""
    return entropy_outliers(entropy_z(logit_var, selected), max_z)


# --- the report's list ----------------------------------------------------------------------
PREMISE_TABLE_COLUMNS = ["stage", "table", "rows", "premise"]


def by_reason(frame: pd.DataFrame, keys: Sequence[str], sep: str = " / ") -> list[tuple[str, list[str]]]:
    """Each distinct unmet premise of ``frame`` (its ``premise`` column; none without one)
    with the rows it applies to, each named by its ``keys`` columns joined with ``sep``."""
    if COLUMN not in frame or frame.empty:
        return []
    bad = frame[frame[COLUMN].fillna("").astype(str) != ""]
    return [(premise, group[list(keys)].drop_duplicates().astype(str).agg(sep.join, axis=1).tolist() if keys else [])
            for premise, group in bad.groupby(COLUMN, sort=False)]


def unmet(tables: dict[str, tuple[str, pd.DataFrame, Sequence[str]]]) -> pd.DataFrame:
    """One row per distinct unmet premise of each table: ``tables`` maps a table's name
    to (stage, frame with a ``premise`` column, the key columns that say which rows)."""
    rows = [{"stage": stage, "table": name, "rows": ", ".join(which), "premise": premise}
            for name, (stage, frame, keys) in tables.items() for premise, which in by_reason(frame, keys)]
    return pd.DataFrame(rows, columns=PREMISE_TABLE_COLUMNS)
