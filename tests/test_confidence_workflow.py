"""Real Snakemake runs of the confidence stage on tiny models (the other analysis stages
switched off in the config): the default outputs exist and hold what they should, and what
reruns after a change is only what depends on it."""

from __future__ import annotations

import copy

import pandas as pd
import pytest

from workflow import (FAMILY, assert_report_holds_every_figure, planned_jobs, snakemake, tiny_family_workflow,
                      with_extra_model)

pytestmark = pytest.mark.workflow

OTHER_STAGES_OFF = {s: {"enabled": False} for s in ("truth", "refusal", "knowledge")}


STATEMENTS = "statement,label\n" + "".join(
    f"the city of {c} is in {k} .,{int(ok)}\n"
    for c, k, ok in [("paris", "france", 1), ("rome", "france", 0), ("berlin", "germany", 1),
                     ("rome", "italy", 1), ("paris", "italy", 0), ("berlin", "france", 0)]
)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    wd = tiny_family_workflow(tmp_path_factory.mktemp("confidence_wf"), {"st.csv": STATEMENTS})
    config = {
        "models": copy.deepcopy(FAMILY),
        "datasets": {"st": {"path": "st.csv", "kind": "statements"}},
        "prompt_sets": {},
        **OTHER_STAGES_OFF,
        "confidence": {"n_neurons": 4, "grid": {"top_norm_fraction": [0.25, 0.5], "n_neurons": [2, 4]},
                       "ablation": {"datasets": ["st"], "n_random": 2, "max_texts": 4}},
    }
    snakemake(wd, config=config)
    return wd, config


def test_default_outputs(run):
    wd, _ = run
    for png in ["scatter/a.png", "scatter/b.png", "venn/f.png", "iou/f.png", "ablation/f.png"]:
        assert (wd / "results/figures/confidence" / png).stat().st_size > 1000
    neurons = pd.read_csv(wd / "results/tables/confidence_neurons.tsv", sep="\t")
    assert set(neurons["model"]) == {"a", "b"} and len(neurons) == 2 * 64
    assert (neurons["block"] == 2).all() and (neurons["family"] == "f").all()
    selected = pd.read_csv(wd / "results/tables/confidence_entropy_neurons.tsv", sep="\t")
    assert set(map(tuple, selected[["top_norm_fraction", "n_neurons"]].drop_duplicates().values)) == {
        (0.25, 2), (0.25, 4), (0.5, 2), (0.5, 4)}
    iou = pd.read_csv(wd / "results/tables/confidence_iou.tsv", sep="\t")
    assert len(iou) == 4 and set(zip(iou["model_a"], iou["model_b"])) == {("a", "b")}
    for row in iou.itertuples():
        sets = [set(selected[(selected.model == m) & (selected.top_norm_fraction == row.top_norm_fraction)
                             & (selected.n_neurons == row.n_neurons)]["neuron"]) for m in ("a", "b")]
        assert row.iou == pytest.approx(len(sets[0] & sets[1]) / len(sets[0] | sets[1]))
    effects = pd.read_csv(wd / "results/tables/confidence_ablation.tsv", sep="\t")
    assert set(effects["model"]) == {"a", "b"}
    assert set(effects["effect"]) == {"total", "direct"} and set(effects["metric"]) == {"entropy", "loss"}
    for m in ("a", "b"):
        ent = effects[(effects.model == m) & (effects.group == "entropy")]["neuron"].unique()
        expected = selected[(selected.model == m) & (selected.top_norm_fraction == 0.25) & (selected.n_neurons == 4)]
        assert sorted(ent) == sorted(expected["neuron"])


def _rules(jobs):
    return sorted(rule for rule, _ in jobs)


def test_unchanged_config_reruns_nothing(run):
    wd, config = run
    assert planned_jobs(wd, config=config) == []


def test_selection_change_recomputes_no_statistics(run):
    wd, config = run
    cfg = copy.deepcopy(config)
    cfg["confidence"]["n_neurons"] = 3
    rules = _rules(planned_jobs(wd, config=cfg))
    assert "confidence_neurons" not in rules
    assert rules.count("confidence_ablation") == 2     # the ablated set depends on (p, n)


def test_ablation_change_touches_only_ablation(run):
    wd, config = run
    cfg = copy.deepcopy(config)
    cfg["confidence"]["ablation"]["n_random"] = 3
    assert _rules(planned_jobs(wd, config=cfg)) == [
        "confidence_ablation", "confidence_ablation", "confidence_ablation_figure", "confidence_ablation_table"]


def test_adding_a_model_runs_only_its_jobs_and_aggregates(run):
    wd, config = run
    cfg = with_extra_model(config)
    jobs = planned_jobs(wd, config=cfg)
    per_model = [out for rule, out in jobs if rule in ("confidence_neurons", "confidence_ablation", "confidence_scatter")]
    assert sorted(per_model) == ["results/confidence/c/ablation.tsv", "results/confidence/c/neurons.tsv",
                                 "results/figures/confidence/scatter/c.png"]


def test_report_holds_every_figure_with_its_caption(run):
    wd, config = run
    assert_report_holds_every_figure(wd, config)
