"""The HDF5 files ptmech writes (activation caches, patching sources and results): their
attributes, written one way, and opening one checked, one way.

Every file carries a ``format`` attribute and ``complete`` (true only once it is whole:
files are written under a temporary name and renamed), plus the provenance of the model
that made it (``provenance``). ``open_checked`` is how every reader opens one: it names the
file and what is wrong with it (not HDF5, another format, incomplete, or an attribute that
differs from what the reader expects)."""

from __future__ import annotations

import json
import os

import h5py
import numpy as np

from .layers import LAYER_CONVENTION


def attr_value(value):
    """HDF5 attributes hold numbers, strings and numeric arrays; anything else is stored as
    JSON text."""
    if isinstance(value, str):
        return str(value)  # plain str: h5py rejects str subclasses
    if isinstance(value, (bool, int, float, np.integer, np.floating)):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(v, (int, np.integer)) for v in value):
        return np.asarray(value, dtype=np.int64)
    return json.dumps(value, default=str)


def write_attrs(f: h5py.File, meta: dict) -> None:
    for key, value in meta.items():
        f.attrs[key] = attr_value(value)


def provenance(adapter, storage_dtype: str) -> dict:
    """What every activation file says of the model that made it and how it was stored."""
    return {"model": adapter.name, "n_layers": adapter.n_layers, "d_model": adapter.d_model,
            "layer_convention": LAYER_CONVENTION, "storage_dtype": storage_dtype,
            "compute_dtype": str(adapter.dtype).replace("torch.", "")}


def plain(value):
    """An attribute as Python compares it: arrays as lists, bytes as text."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, bytes):
        return value.decode()
    return value


def open_checked(path: str | os.PathLike, *, fmt: str, what: str, datasets: tuple[str, ...] = (),
                 expect: dict | None = None, error: type[Exception] = ValueError, recover: str = "",
                 context: str = "") -> h5py.File:
    """The file open for reading, once it is a readable HDF5 file of format ``fmt`` holding
    ``datasets``, complete, and with every attribute in ``expect`` at that value. Otherwise
    ``error`` naming the file, ``what`` it should be and what is wrong, then ``context``
    (who is reading) and ``recover`` (how to get a good one)."""
    try:
        f = h5py.File(path, "r")
    except (OSError, ValueError) as e:
        raise error(f"{path}: not a readable HDF5 file (truncated or foreign?): {e}{recover}") from None
    a = f.attrs
    problem = None
    if a.get("format") != fmt or any(name not in f for name in datasets):
        problem = f"not a {what} (format attribute {a.get('format')!r}, expected {fmt!r})"
    elif not a.get("complete", False):
        problem = f"incomplete {what} (the job writing it did not finish)"
    else:
        for key, value in (expect or {}).items():
            if plain(a.get(key)) != plain(value):
                problem = f"{key} is {plain(a.get(key))!r}, expected {value!r}{context}"
                break
    if problem:
        f.close()
        raise error(f"{path}: {problem}{recover}")
    return f
