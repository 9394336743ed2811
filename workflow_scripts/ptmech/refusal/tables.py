"""The refusal stage's tidy tables over all models: the refusal scores of every (target,
source, operation), every candidate's selection scores, and the direction cosines of each
pair per residual index k. Pure pandas on what the jobs wrote; the rule script only reads
and writes files."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .. import premises
from . import candidates as rf

SCORE_ORDER = ["family", "target", "instructions", "operation", "direction", "source", "coefficient"]
COSINE_COLUMNS = ["family", "model_a", "model_b", "k", "position_a", "position_b", "cosine",
                  "k_selected_a", "k_selected_b", "cosine_selected"]


def scores_table(frames: list[pd.DataFrame], models: dict, pair_info: list[dict], directions: dict,
                 metas: dict, min_baseline: float) -> pd.DataFrame:
    """The baseline and steering score frames as one table. Each row gets the target's
    family and both roles, its ``direction`` (baseline, native for a model's own direction,
    else the pair's forward / backward / lateral from ``pair_info``), the cosine of the
    source's direction to the target's own, and its premises: the source's direction is a
    fallback, or an ablation targets a model that refuses fewer than ``min_baseline`` of
    the harmful prompts unsteered."""
    labels = {(q["source"], q["target"]): q["direction"] for q in pair_info}
    scores = pd.concat(frames, ignore_index=True)
    scores["source"] = scores["source"].fillna("")
    scores["family"] = scores["target"].map(lambda m: models[m]["family"])
    scores["target_role"] = scores["target"].map(lambda m: models[m]["role"])
    scores["source_role"] = scores["source"].map(lambda m: models[m]["role"] if m else "")
    scores["direction"] = ["baseline" if op == "none" else "native" if src == tgt else labels.get((src, tgt), "lateral")
                           for op, src, tgt in zip(scores["operation"], scores["source"], scores["target"])]
    scores["cosine_to_native"] = [rf.cosine(directions[src], directions[tgt]) if src else np.nan
                                  for src, tgt in zip(scores["source"], scores["target"])]
    unsteered = scores[(scores["operation"] == "none") & (scores["instructions"] == "harmful")]
    baseline_rate = dict(zip(unsteered["target"], unsteered["refusal_score"]))
    scores[premises.COLUMN] = [
        premises.joined([premises.refusal_direction(metas[src]["rule"]) if src else "",
                         premises.refusal_baseline(baseline_rate.get(tgt, float("nan")), min_baseline)
                         if op == "ablation" else ""])
        for op, src, tgt in zip(scores["operation"], scores["source"], scores["target"])]
    return scores.sort_values(SCORE_ORDER)


def selection_table(frames: dict[str, pd.DataFrame], metas: dict) -> pd.DataFrame:
    """Every model's candidate scores (model -> its selection frame), with how its direction
    was chosen and the fallback premise."""
    out = []
    for model, frame in frames.items():
        frame = frame.copy()
        frame["discarded"] = frame["discarded"].fillna("")
        frame.insert(0, "how", metas[model]["how"])
        frame[premises.COLUMN] = premises.refusal_direction(metas[model]["rule"])
        frame.insert(0, "model", model)
        out.append(frame)
    return pd.concat(out, ignore_index=True)


def cosine_table(pairs: list[tuple[str, str]], models: dict, candidates: dict, directions: dict,
                 metas: dict) -> pd.DataFrame:
    """Per unordered pair (model_a, model_b), in the plan's order (the base model first):
    cos of the two models' candidates at every k, each read at its own selected position,
    and the cosine of the two selected directions."""
    out = []
    for a, b in pairs:
        frame = rf.direction_cosines(candidates[a], candidates[b], metas[a]["position"], metas[b]["position"])
        out.append(frame.assign(
            family=models[a]["family"], model_a=a, model_b=b,
            position_a=metas[a]["position"], position_b=metas[b]["position"],
            k_selected_a=metas[a]["k"], k_selected_b=metas[b]["k"],
            cosine_selected=rf.cosine(directions[a], directions[b])))
    return pd.concat(out, ignore_index=True)[COSINE_COLUMNS] if out else pd.DataFrame(columns=COSINE_COLUMNS)
