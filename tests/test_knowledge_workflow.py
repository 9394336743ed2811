"""The knowledge stage through Snakemake itself, on two tiny models of one family: a real run
of its jobs, then dry runs proving what reruns (adding a model adds only its jobs; a figure
setting reruns only the aggregates; an unchanged config reruns nothing)."""

from __future__ import annotations

import copy

import pandas as pd
import pytest

from workflow import (FAMILY, assert_report_holds_every_figure, dry_run_error, planned_jobs, snakemake,
                      tiny_family_workflow, with_extra_model)

pytestmark = pytest.mark.workflow

CITIES = ["paris", "rome", "berlin"]
COUNTRIES = ["france", "italy", "germany"]
STATEMENTS = "statement,label\n" + "".join(
    f"The city of {c} is in {k}.,{int(i == j)}\n" for i, c in enumerate(CITIES) for j, k in enumerate(COUNTRIES)
)
TARGETS = ["results/tables/knowledge_heatmaps.tsv", "results/figures/knowledge/f/cities_heatmaps.png",
           "results/figures/knowledge/f/cities_heatmaps_raw.png", "results/figures/knowledge/f/cities_differences.png"]


@pytest.fixture(scope="module")
def knowledge_workflow(tmp_path_factory):
    wd = tiny_family_workflow(tmp_path_factory.mktemp("wf"), {"cities.csv": STATEMENTS})
    config = {
        "models": copy.deepcopy(FAMILY),
        "datasets": {"cities": {"path": "cities.csv", "kind": "statements"}},
        "prompt_sets": {"statements": {"kind": "statements", "positions": "last", "datasets": ["cities"]}},
        "knowledge": {"datasets": ["cities"], "n_true_demos": 1, "n_false_demos": 1, "batch_size": 16},
        "refusal": {"enabled": False},  # no instruction datasets here
    }
    snakemake(wd, "--show-failed-logs", *TARGETS, config=config)  # a flag ends --configfile's list
    return wd, config


def test_real_run_writes_every_output(knowledge_workflow):
    wd, _ = knowledge_workflow
    for t in TARGETS:
        assert (wd / t).stat().st_size > 0
    heat = pd.read_csv(wd / "results/tables/knowledge_heatmaps.tsv", sep="\t", keep_default_na=False)
    assert set(zip(heat.source, heat.target)) == {("a", "a"), ("b", "b"), ("a", "b"), ("b", "a")}
    assert set(heat.direction) == {"single", "forward", "backward"}
    assert heat.role.tolist()[:12] == ["The", "city", "of", "[s1]", "is", "in", "[o1]", ".", "This", "statement", "is", ":"]
    diff = pd.read_csv(wd / "results/tables/knowledge_differences.tsv", sep="\t")
    assert set(diff.comparison) == {"base_vs_post", "base_to_post_vs_post", "post_to_base_vs_base"}
    base = pd.read_csv(wd / "results/tables/knowledge_baselines.tsv", sep="\t")
    single = base[base.source == base.target]
    # patching the true run's last block at the last token gives the true run's LD
    assert (abs(single.patched_last_cell_ld - single.target_true_ld) < 1e-4).all()


def test_unchanged_config_reruns_nothing(knowledge_workflow):
    wd, config = knowledge_workflow
    assert planned_jobs(wd, *TARGETS, config=config) == []


def test_adding_a_model_runs_only_its_jobs(knowledge_workflow):
    wd, config = knowledge_workflow
    cfg = with_extra_model(config)
    jobs = planned_jobs(wd, *TARGETS, config=cfg)
    rules = sorted(rule for rule, _ in jobs)
    assert "knowledge_pairs" not in rules  # pairs depend on the family's first model only
    sources = sorted(out for rule, out in jobs if rule == "knowledge_sources")
    assert sources == ["results/knowledge/sources/c/cities.h5"]
    patches = sorted(out.split("/")[3:5] for rule, out in jobs if rule == "knowledge_patch")
    assert patches == sorted([["c", "c"], ["a", "c"], ["c", "a"], ["b", "c"], ["c", "b"]])
    assert set(rules) == {"knowledge_sources", "knowledge_patch", "knowledge_tables", "knowledge_figures"}


def test_a_figure_setting_reruns_only_aggregates(knowledge_workflow):
    wd, config = knowledge_workflow
    cfg = copy.deepcopy(config)
    cfg["knowledge"]["bins"] = 10
    assert {rule for rule, _ in planned_jobs(wd, *TARGETS, config=cfg)} == {"knowledge_tables", "knowledge_figures"}


def test_unknown_dataset_is_a_clear_error(knowledge_workflow):
    wd, config = knowledge_workflow
    cfg = copy.deepcopy(config)
    cfg["knowledge"]["datasets"] = ["towns"]
    assert "knowledge.datasets: dataset 'towns' is not defined under datasets" in dry_run_error(wd, cfg)


def test_report_holds_every_figure_with_its_caption(knowledge_workflow):
    wd, config = knowledge_workflow
    assert_report_holds_every_figure(wd, config, tuple(TARGETS))
