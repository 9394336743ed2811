"""The knowledge stage's tidy tables over every patching result: the heatmap cells, each
run's clean baselines with the logit-gap premise, and the difference statistics between
models (ptmech.knowledge.heatmaps). Pure numpy / pandas on what ``read_patching`` returns;
the rule script only reads and writes files."""

from __future__ import annotations

import pandas as pd

from .. import premises
from . import heatmaps

KEY_COLUMNS = ["family", "dataset", "source", "target", "direction", "query", "n_pairs"]


def run_key(attrs: dict) -> dict:
    """What names one patching run: family, dataset, source, target, direction, query, pairs."""
    return {"family": attrs["family"], "dataset": attrs["dataset"], "source": attrs["source"],
            "target": attrs["target"], "direction": attrs["direction"], "query": attrs.get("query", "question"),
            "n_pairs": int(attrs["n_pairs"])}


def run_premise(result: dict, min_t: float) -> tuple[dict, str]:
    """The paired t of the clean true-minus-false logit gap of the target and the source,
    and the premise (empty when met): each model that patching reads (the source too in
    cross-model runs) tells true from false above noise."""
    a = result["attrs"]
    t = {"target": premises.gap_t(result["target_true_ld"], result["target_false_ld"]),
         "source": premises.gap_t(result["source_true_ld"], result["source_false_ld"])}
    sides = ["target"] + (["source"] if a["source"] != a["target"] else [])
    return t, premises.joined(f"{who}: {why}" for who in sides if (why := premises.logit_gap(t[who], min_t)))


def baseline_row(result: dict, t: dict, premise: str) -> dict:
    """One run's clean logit differences (means over pairs), the target's accuracy, the
    patched grid's range and its last cell, and the premise."""
    tt, tf, ld = result["target_true_ld"], result["target_false_ld"], result["ld"]
    return {**run_key(result["attrs"]),
            "source_true_ld": float(result["source_true_ld"].mean()),
            "source_false_ld": float(result["source_false_ld"].mean()),
            "target_true_ld": float(tt.mean()), "target_false_ld": float(tf.mean()),
            "target_accuracy": float(((tt > 0).sum() + (tf < 0).sum()) / (2 * len(tt))),
            "patched_last_cell_ld": float(ld[:, -1, -1].mean()),
            "min_mean_ld": float(ld.mean(axis=0).min()), "max_mean_ld": float(ld.mean(axis=0).max()),
            "target_gap_t": t["target"], "source_gap_t": t["source"], premises.COLUMN: premise}


def patching_tables(results: list[dict], models: dict, bins: int, min_t: float) -> dict[str, pd.DataFrame]:
    """``heatmaps`` (every cell of every run, its run's key first), ``baselines`` (a row
    per run) and ``differences`` (``heatmaps.difference_table``) from the runs'
    ``read_patching`` results."""
    maps, baselines = [], []
    for r in results:
        t, premise = run_premise(r, min_t)
        maps.append(heatmaps.tidy_heatmap(r["ld"], r["attrs"]["columns"], bins).assign(**run_key(r["attrs"]))
                    .assign(**{premises.COLUMN: premise}))
        baselines.append(baseline_row(r, t, premise))
    table = pd.concat(maps, ignore_index=True)
    table = table[KEY_COLUMNS + [c for c in table.columns if c not in KEY_COLUMNS]]
    return {"heatmaps": table, "baselines": pd.DataFrame(baselines),
            "differences": heatmaps.difference_table(table, models)}


def lone_families(heatmaps_table: pd.DataFrame) -> list[str]:
    """Families with one model patched: they have no difference statistics."""
    return sorted(f for f, rows in heatmaps_table.groupby("family") if rows["target"].nunique() < 2)
