"""Datasets: read local CSV / TSV / JSON / JSONL / parquet files or hub datasets with the
``datasets`` library and normalise them to one tidy table per dataset.

Normalised columns by dataset ``kind``:

* ``statements``: ``statement`` (str), ``label`` (int, 1 true / 0 false), extra columns kept;
* ``instructions``: ``instruction`` (str), ``split`` (train / val / test, if the source
  has one), extra columns kept.

``columns`` in a dataset's config maps normalised names to the source's names, e.g.
``{instruction: goal}`` for AdvBench.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

REQUIRED = {"statements": ["statement", "label"], "instructions": ["instruction"]}
FORMATS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
TRUE_LABELS = {"1", "true", "t", "yes"}
FALSE_LABELS = {"0", "false", "f", "no"}
SPLITS = ("train", "val", "test")


class DatasetError(ValueError):
    pass


def read_source(name: str, spec: dict, path: str | None = None) -> pd.DataFrame:
    """The raw table of dataset ``name``: from the local file ``path`` (for ``path`` and
    ``organism`` sources) with pandas, or from the hub (``hub`` source) with ``datasets``.
    A file that cannot be parsed is an error naming it (and pandas' line, for CSV)."""
    if path is not None:
        suffix = Path(path).suffix.lower()
        if suffix not in FORMATS:
            raise DatasetError(f"dataset {name!r}: {path}: unsupported file type {suffix!r} "
                               f"(use one of {', '.join(FORMATS)})")
        if not Path(path).is_file():
            raise DatasetError(f"dataset {name!r}: file {path} does not exist")
        if Path(path).stat().st_size == 0:
            raise DatasetError(f"dataset {name!r}: file {path} is empty (0 bytes): it needs a header line and rows")
        try:
            if suffix in (".csv", ".tsv"):
                return pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",")
            if suffix == ".parquet":
                return pd.read_parquet(path)
            return pd.read_json(path, lines=suffix == ".jsonl", orient="records", dtype=False, convert_dates=False)
        except (ValueError, UnicodeDecodeError, OSError) as e:  # pandas' ParserError is a ValueError
            raise DatasetError(f"dataset {name!r}: file {path} cannot be read as {suffix[1:].upper()}: "
                               f"{str(e).strip()}") from None
    if "hub" in spec:
        import datasets

        datasets.disable_progress_bars()
        ds = datasets.load_dataset(spec["hub"], spec.get("config"), split=spec.get("split", "train"),
                                   revision=spec.get("revision"))
        return ds.to_pandas()
    raise DatasetError(f"dataset {name!r}: no source (give path, hub or organism)")


def check_columns(name: str, spec: dict, columns: list[str], source: str) -> None:
    """The columns a dataset of this kind needs, after the configured mapping."""
    mapping = spec.get("columns", {})
    for col in REQUIRED[spec.get("kind", "statements")]:
        src = mapping.get(col, col)
        if src not in columns:
            hint = "" if col in mapping else f"; map one with datasets.{name}.columns.{col}"
            raise DatasetError(f"dataset {name!r} ({source}): missing column {src!r} "
                               f"(has {columns}){hint}")


def normalise(name: str, table: pd.DataFrame, spec: dict, source: str = "",
              warn: Callable[[str], None] | None = None) -> pd.DataFrame:
    """Rename columns per ``spec["columns"]``, check the kind's required columns, apply
    ``spec["filter"]`` (column -> allowed values), and normalise labels to 0/1.

    Cleaning is never silent (``warn`` is told what and how many): rows with an empty or
    missing text are dropped; a statement labelled both true and false is dropped, all its
    rows (the paper's facts.csv has one); a statement repeated with one label is kept. A
    label other than 1/0 or true/false is an error naming its row (the line of a CSV
    source, header = line 1)."""
    kind = spec.get("kind", "statements")
    where = f"dataset {name!r} ({source or 'source'})"
    mapping = spec.get("columns", {})
    missing = [src for src in mapping.values() if src not in table.columns]
    if missing:
        raise DatasetError(f"{where}: configured column(s) {missing} not found; it has {list(table.columns)}")
    check_columns(name, spec, list(table.columns), source or "source")
    table = table.rename(columns={src: dst for dst, src in mapping.items()})
    table.index = pd.RangeIndex(2, len(table) + 2)  # the row's line in a CSV file (header = 1)
    for col, allowed in spec.get("filter", {}).items():
        if col not in table.columns:
            raise DatasetError(f"{where}: filter column {col!r} not found")
        table = table[table[col].isin(allowed if isinstance(allowed, list) else [allowed])]
    text_col = REQUIRED[kind][0]
    empty = table[text_col].isna() | (table[text_col].astype(str).str.strip() == "")
    if empty.any() and warn:
        warn(f"{where}: dropped {int(empty.sum())} of {len(table)} rows with an empty {text_col} "
             f"(rows {_rows(table.index[empty])})")
    table = table[~empty].copy()
    table[text_col] = table[text_col].astype(str)
    if "label" in table.columns and kind == "statements":
        table["label"] = _labels(table["label"], where)
        both = table.groupby(text_col)["label"].nunique()
        contradicted = table[text_col].isin(both.index[both > 1])
        if contradicted.any() and warn:
            first = table.loc[contradicted, text_col].iloc[0]
            warn(f"{where}: dropped {int(contradicted.sum())} rows of {int((both > 1).sum())} statement(s) "
                 f"labelled both true and false, e.g. {first!r} (rows {_rows(table.index[table[text_col] == first])})")
        table = table[~contradicted]
    repeated = table[text_col].duplicated()
    if repeated.any() and warn:
        warn(f"{where}: {int(repeated.sum())} rows repeat an earlier {text_col} with the same label "
             f"(kept; rows {_rows(table.index[repeated])})")
    if spec.get("limit"):
        table = table.iloc[: int(spec["limit"])]
    if table.empty:
        raise DatasetError(f"{where}: no rows left")
    return table.reset_index(drop=True)


def _rows(index, shown: int = 5) -> str:
    rows = [str(i) for i in list(index)[:shown]]
    return ", ".join(rows) + (f" and {len(index) - shown} more" if len(index) > shown else "")


def _labels(values: pd.Series, where: str) -> pd.Series:
    text = values.astype(str).str.strip().str.lower()
    bad = ~text.isin(TRUE_LABELS | FALSE_LABELS)
    if bad.any():
        raise DatasetError(f"{where}: label values must be 1/0 or true/false, found {values[bad].iloc[0]!r} "
                           f"in row {values.index[bad][0]} ({int(bad.sum())} such rows)")
    return text.isin(TRUE_LABELS).astype(int)


def load_table(path: str) -> pd.DataFrame:
    """A normalised dataset TSV as written by the workflow."""
    return pd.read_csv(path, sep="\t", keep_default_na=False, na_values=[""])


def instruction_splits(table: pd.DataFrame, fractions: dict[str, float], seed: int = 42) -> np.ndarray:
    """The split (train / val / test) of each row: the dataset's ``split`` column if it has
    one, else a seeded random assignment in the given fractions (e.g. for AdvBench)."""
    if "split" in table.columns:
        return table["split"].astype(str).to_numpy()
    n = len(table)
    total = sum(fractions.get(s, 0.0) for s in SPLITS)
    counts = [int(round(n * fractions.get(s, 0.0) / total)) for s in SPLITS]
    counts[0] = n - sum(counts[1:])
    perm = np.random.default_rng(seed).permutation(n)
    out = np.empty(n, dtype=object)
    start = 0
    for s, c in zip(SPLITS, counts):
        out[perm[start:start + c]] = s
        start += c
    return out.astype(str)
