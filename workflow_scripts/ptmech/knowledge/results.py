"""Patching result files, one per (source, target, dataset): written by the patching job,
read by tables and figures. Plain h5py and numpy, no torch, so the jobs that read them load
no model library (``ptmech.knowledge.patching`` re-exports these)."""

from __future__ import annotations

import json
import os

import h5py
import numpy as np

from .. import h5
from ..io import atomic_path
from ..layers import LAYER_CONVENTION

PATCHING_FORMAT = "ptmech-patching/1"
# the layer axis of every patching file: residual indices k = 1..L (patching replaces block outputs)
K_AXIS = "residual index k = 1..L: the output of block k - 1 (the paper's layer k - 1), before the final norm"


class PatchingError(RuntimeError):
    pass


def write_patching(path: str | os.PathLike, ld: np.ndarray, arrays: dict[str, np.ndarray], attrs: dict) -> None:
    """One (source, target, dataset) result: ``ld`` [P, T, L] float32 plus per-pair arrays
    (clean baselines, rows), atomically."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f["ld"] = ld.astype(np.float32)
        for name, values in arrays.items():
            f[name] = np.asarray(values)
        h5.write_attrs(f, {"format": PATCHING_FORMAT, "layer_axis": K_AXIS, "k": list(range(1, ld.shape[2] + 1)),
                           "layer_convention": LAYER_CONVENTION,
                           "ld_axes": "pair, position (-T..-1, earliest first), k (1..L)", **attrs, "complete": True})


def read_patching(path: str | os.PathLike) -> dict:
    """Everything in a patching result file: arrays by name plus ``attrs`` (with
    ``columns`` decoded from JSON)."""
    with h5.open_checked(path, fmt=PATCHING_FORMAT, what="patching result", datasets=("ld",),
                         error=PatchingError) as f:
        out = {name: f[name][:] for name in f}
        attrs = dict(f.attrs)
    attrs["columns"] = json.loads(attrs["columns"]) if isinstance(attrs.get("columns"), str) else attrs.get("columns")
    out["attrs"] = attrs
    return out
