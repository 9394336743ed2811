"""Premise checks (ptmech.premises): each flags exactly the failure it names."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ptmech import premises


def test_refusal_direction_flags_a_fallback_only():
    assert premises.refusal_direction("lowest ablation_refusal_score among candidates passing the filters") == ""
    assert "no refusal direction passed" in premises.refusal_direction(
        "fallback: no candidate passed the induce filter; highest addition_refusal_score among ...")


def test_refusal_baseline_needs_refusals_to_ablate():
    assert premises.refusal_baseline(0.9, 0.5) == ""
    assert premises.refusal_baseline(0.5, 0.5) == ""
    assert "baseline refusal 0.04" in premises.refusal_baseline(1 / 26, 0.5)
    assert premises.refusal_baseline(float("nan"), 0.5) == ""  # no baseline row: nothing to judge


def test_logit_gap_is_a_paired_t_statistic():
    rng = np.random.default_rng(0)
    false_ld = rng.normal(size=48)
    # the Gemma case: a 0.04 logit gap under unit noise
    t = premises.gap_t(false_ld + 0.04 + rng.normal(size=48), false_ld)
    assert "within noise" in premises.logit_gap(t, 3.0)
    assert premises.logit_gap(premises.gap_t(false_ld + 2.0 + 0.1 * rng.normal(size=48), false_ld), 3.0) == ""
    # paired: a large spread shared by true and false statements is not noise in the gap
    shared = 100 * rng.normal(size=48)
    assert premises.gap_t(shared + 1.0 + 0.1 * rng.normal(size=48), shared) > 30
    # the t statistic itself: d = (1, 0, 1, 0): mean 0.5, sd sqrt(1/3), t = 0.5 / (sd / 2) = sqrt(3)
    assert premises.gap_t([1.0, 0.0, 1.0, 0.0], np.zeros(4)) == pytest.approx(np.sqrt(3))
    assert premises.logit_gap(np.sqrt(3), 1.74) != "" and premises.logit_gap(np.sqrt(3), 1.73) == ""
    assert premises.gap_t(-np.ones(5), np.zeros(5)) == -np.inf  # a gap the wrong way, without noise
    assert premises.logit_gap(-np.inf, 3.0) != "" and premises.logit_gap(np.inf, 3.0) == ""
    assert "fewer than two pairs" in premises.logit_gap(premises.gap_t([1.0], [0.0]), 3.0)


def test_entropy_outliers_are_judged_against_their_layer():
    rng = np.random.default_rng(0)
    logit_var = np.exp(rng.normal(size=256))
    picked = np.arange(10)
    assert "not outliers" in premises.entropy_premise(logit_var, picked, -3.0)
    logit_var[picked] = np.exp(-8.0)  # far below the layer: outliers
    assert premises.entropy_z(logit_var, picked) < -5
    assert premises.entropy_premise(logit_var, picked, -3.0) == ""
    assert premises.robust_z(np.ones(5)).tolist() == [0.0] * 5


def test_unmet_lists_each_reason_once_with_its_rows():
    scores = pd.DataFrame({"target": ["a", "a", "b"], "source": ["a", "b", "b"],
                           "premise": ["", "no direction", "no direction"]})
    out = premises.unmet({"refusal_scores": ("refusal", scores, ["target", "source"]),
                          "empty": ("x", pd.DataFrame(columns=["premise"]), [])})
    assert out.to_dict("records") == [{"stage": "refusal", "table": "refusal_scores", "rows": "a / b, b / b",
                                       "premise": "no direction"}]
    ok = premises.unmet({"t": ("s", scores.assign(premise=""), ["target"])})
    assert ok.empty and list(ok.columns) == premises.PREMISE_TABLE_COLUMNS
    assert premises.joined(["x", "", "y", "x"]) == "x; y"


def test_a_figure_with_an_unmet_premise_carries_the_note(tmp_path):
    import matplotlib.pyplot as plt
    from PIL import Image

    from ptmech import figures

    sizes = {}
    for name, notes in (("plain", []), ("noted", ["no refusal direction passed the selection filters"])):
        fig, ax = plt.subplots(figsize=(4, 3))
        ax.plot([0, 1], [0, 1])
        figures.save(fig, tmp_path / f"{name}.png", notes=notes + [""])
        sizes[name] = Image.open(tmp_path / f"{name}.png").size
        assert fig.number not in plt.get_fignums()  # closed
    assert sizes["noted"][1] > sizes["plain"][1]  # the note is printed under the figure
    reds = Image.open(tmp_path / "noted.png").convert("RGB").getcolors(1 << 20)
    assert any(r > 150 and g < 60 and b < 60 for _, (r, g, b) in reds)  # in red
    table = pd.DataFrame({"source": ["a", "a", "b", "b"], "target": ["a", "b", "a", "b"], "premise": ["", "x", "x", "y"]})
    assert figures.table_notes(table) == ["x", "y"]
    assert figures.table_notes(table, ["source", "target"]) == ["a → b, b → a: x", "b → b: y"]
    assert figures.table_notes(pd.DataFrame({"other": [1]})) == []
