"""The report's one figure style (ptmech.figures): a colour per role that does not depend on
the family or the figure, models in config order, widths the report can show."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.colors import to_rgb

from ptmech import figures
from ptmech.confidence import figures as confidence_figures
from ptmech.refusal import figures as refusal_figures
from ptmech.truth import figures as truth_figures

# config order on purpose not alphabetical: sft before instruct ("m-it")
MODELS = {"m-base": {"family": "m", "role": "base"}, "m-sft": {"family": "m", "role": "sft"},
          "m-it": {"family": "m", "role": "instruct"}, "q-base": {"family": "q", "role": "base"},
          "q-it": {"family": "q", "role": "instruct"}, "q-it2": {"family": "q", "role": "instruct"}}


def test_a_role_has_one_colour_in_every_family_and_a_second_model_of_a_role_another_shade():
    c = figures.model_colours(MODELS)
    assert c["m-base"] == c["q-base"] == to_rgb(figures.ROLE_COLOURS["base"])
    assert c["m-it"] == c["q-it"] == to_rgb(figures.ROLE_COLOURS["instruct"])
    assert len({c["m-base"], c["m-it"], c["m-sft"]}) == 3 and c["q-it2"] != c["q-it"]
    # adding a family changes no other model's colour
    assert {m: c[m] for m in ("m-base", "m-it", "m-sft")} == figures.model_colours(
        {m: MODELS[m] for m in ("m-base", "m-it", "m-sft")})
    unknown = figures.model_colours({"a": {"family": "f", "role": "kto"}, "b": {"family": "f", "role": "orpo"}})
    assert unknown["a"] != unknown["b"]


def test_the_accuracy_figure_lists_models_in_config_order_in_their_colours():
    rows = [{"model": m, "probe": "mm", "heldout": h, "k": k, "accuracy": 0.5 + 0.1 * k}
            for m in ("m-sft", "m-it", "m-base") for h in ("a", "b") for k in range(4)]
    fig = truth_figures.accuracy(pd.DataFrame(rows), 2, "t", MODELS)
    legend = fig.legends[0]
    labels = [t.get_text() for t in legend.get_texts()]
    assert [x for x in labels if x in MODELS] == ["m-base", "m-sft", "m-it"]  # neither the table's nor sorted
    handles = dict(zip(labels, legend.legend_handles))
    colours = figures.model_colours(MODELS)
    for m in ("m-base", "m-it", "m-sft"):
        assert to_rgb(handles[m].get_color()) == colours[m]


def test_refusal_scores_order_targets_by_config_and_colour_sources_by_model():
    rows = []
    for target in ("m-sft", "m-base", "m-it"):  # the table is sorted by name, not config order
        rows.append({"target": target, "source": None, "operation": "none", "instructions": "harmful",
                     "refusal_score": 0.5, "direction": "baseline", "default_coefficient": True})
        for source in ("m-base", "m-it"):
            rows.append({"target": target, "source": source, "operation": "ablation", "instructions": "harmful",
                         "refusal_score": 0.2, "direction": "native", "default_coefficient": True})
    fig = refusal_figures.scores_figure(pd.DataFrame(rows), MODELS)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["m-base", "m-sft", "m-it"]
    colours = figures.model_colours(MODELS)
    bars = {(round(b.get_x() + b.get_width() / 2, 6)): to_rgb(b.get_facecolor()) for b in ax.patches}
    assert set(bars.values()) == {to_rgb(figures.BASELINE_COLOUR), colours["m-base"], colours["m-it"]}


def test_the_ablation_figure_stays_within_the_report_width():
    rng = np.random.default_rng(0)
    rows = [{"model": m, "group": "entropy", "neuron": n, "metric": metric, "effect": effect, "change": rng.normal()}
            for m in ("m-base", "m-it", "m-sft") for n in range(40) for metric in ("entropy", "loss")
            for effect in ("total", "direct")]
    fig = confidence_figures.ablation_bars(pd.DataFrame(rows), {m: MODELS[m] for m in ("m-base", "m-it", "m-sft")})
    assert fig.get_figwidth() <= figures.MAX_WIDTH + 1.0  # the legend and labels may add a little
