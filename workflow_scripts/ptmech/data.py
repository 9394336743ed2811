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

import pandas as pd

REQUIRED = {"statements": ["statement", "label"], "instructions": ["instruction"]}
FORMATS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
TRUE_LABELS = {"1", "true", "t", "yes"}
FALSE_LABELS = {"0", "false", "f", "no"}


class DatasetError(ValueError):
    pass


def read_source(name: str, spec: dict, path: str | None = None) -> pd.DataFrame:
    """The raw table of dataset ``name``: from the local file ``path`` (for ``path`` and
    ``organism`` sources) or from the hub (``hub`` source)."""
    import datasets

    datasets.disable_progress_bars()
    if path is not None:
        suffix = Path(path).suffix.lower()
        if suffix not in FORMATS:
            raise DatasetError(f"dataset {name!r}: {path}: unsupported file type {suffix!r} "
                               f"(use one of {', '.join(FORMATS)})")
        if not Path(path).is_file():
            raise DatasetError(f"dataset {name!r}: file {path} does not exist")
        kwargs = {"sep": "\t"} if suffix == ".tsv" else {}
        ds = datasets.load_dataset(FORMATS[suffix], data_files=str(path), split="train", **kwargs)
    elif "hub" in spec:
        ds = datasets.load_dataset(spec["hub"], spec.get("config"), split=spec.get("split", "train"),
                                   revision=spec.get("revision"))
    else:
        raise DatasetError(f"dataset {name!r}: no source (give path, hub or organism)")
    return ds.to_pandas()


def source_columns(path: str) -> list[str]:
    """Column names of a local dataset file, read cheaply (header or schema only)."""
    import json

    suffix = Path(path).suffix.lower()
    if Path(path).is_file() and Path(path).stat().st_size == 0:
        raise DatasetError(f"file {path} is empty (0 bytes): it needs a header line and rows")
    if suffix in (".csv", ".tsv"):
        try:
            return list(pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", nrows=0).columns)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
            raise DatasetError(f"file {path} cannot be read as {suffix[1:].upper()}: {e}") from None
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        return list(pq.read_schema(path).names)
    if suffix == ".jsonl":
        with open(path) as f:
            return list(json.loads(f.readline() or "{}"))
    if suffix == ".json":
        with open(path) as f:
            records = json.load(f)
        return list(records[0]) if isinstance(records, list) and records else list(records)
    raise DatasetError(f"{path}: unsupported file type {suffix!r} (use one of {', '.join(FORMATS)})")


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
