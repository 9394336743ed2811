"""Unmet premises through Snakemake itself: tiny random models refuse nothing, carry no
entropy neurons and barely tell true from false, so the refusal, confidence and knowledge
stages all run on a failed premise. Each table says so in its premise column, the report
lists them first, and the figures carry the note."""

from __future__ import annotations

import copy

import pandas as pd
import pytest

from workflow import FAMILY, assert_report_holds_every_figure, snakemake, tiny_family_workflow

pytestmark = pytest.mark.workflow

CITIES = ["paris", "rome", "berlin"]
COUNTRIES = ["france", "italy", "germany"]
STATEMENTS = "statement,label\n" + "".join(
    f"The city of {c} is in {k}.,{int(i == j)}\n" for i, c in enumerate(CITIES) for j, k in enumerate(COUNTRIES))


def _instructions(verbs: list[str]) -> str:
    rows = [(f"how to {v} {c}", split) for v in verbs for c, split in
            zip(CITIES + ["france", "italy", "germany"], ["train", "train", "train", "val", "val", "test"])]
    return "instruction,split\n" + "".join(f"{t},{s}\n" for t, s in rows)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    wd = tiny_family_workflow(tmp_path_factory.mktemp("premises_wf"), {
        "cities.csv": STATEMENTS,
        "harmful.csv": _instructions(["poison", "steal", "burn down"]),
        "harmless.csv": _instructions(["visit", "photograph", "describe"])})
    config = {
        "models": copy.deepcopy(FAMILY),
        "datasets": {"cities": {"path": "cities.csv", "kind": "statements"},
                     "harmful": {"path": "harmful.csv", "kind": "instructions"},
                     "harmless": {"path": "harmless.csv", "kind": "instructions"}},
        "prompt_sets": {"statements": {"kind": "statements", "positions": "last", "datasets": ["cities"]},
                        "instructions": {"kind": "instructions", "positions": "post_instruction",
                                         "datasets": ["harmful", "harmless"]}},
        "truth": {"enabled": False},
        "refusal": {"generation": {"max_new_tokens": 3}, "selection": {"max_new_tokens": 3}},
        "knowledge": {"datasets": ["cities"], "n_true_demos": 1, "n_false_demos": 1},
        "confidence": {"n_neurons": 4},
    }
    snakemake(wd, "--show-failed-logs", config=config)
    return wd, config


def _table(wd, name):
    return pd.read_csv(wd / "results" / "tables" / f"{name}.tsv", sep="\t", keep_default_na=False)


def test_each_table_names_its_unmet_premise(run):
    wd, _ = run
    scores = _table(wd, "refusal_scores")
    ablation = scores[scores["operation"] == "ablation"]
    assert ablation["premise"].str.contains("baseline refusal 0.00 of harmful prompts < 0.5").all()
    assert (scores.loc[scores["operation"] == "none", "premise"] == "").all()  # a baseline has no premise
    selection = _table(wd, "refusal_selection")
    fallback = {m for m, rule in zip(selection["model"], selection["premise"]) if "no refusal direction" in rule}
    assert fallback == {"a", "b"}
    neurons = _table(wd, "confidence_entropy_neurons")
    assert neurons["premise"].str.startswith("entropy neurons are not outliers").all()
    assert (neurons["logit_var_median_z"] > -3).all()
    baselines = _table(wd, "knowledge_baselines")
    # the gap check ran on each side (the source's only in cross-model runs); whether the
    # premise holds depends on the weights, that the flag follows the t statistic does not
    cross = baselines["source"] != baselines["target"]
    for side, applies in (("target", True), ("source", cross)):
        expected = (baselines[f"{side}_gap_t"] < 3) & applies
        assert (baselines["premise"].str.contains(f"{side}: clean logit gap within noise") == expected).all()


def test_the_report_lists_them_first(run):
    wd, config = run
    premises = _table(wd, "premises")
    assert {"refusal", "confidence"} <= set(premises["stage"])
    selection = premises[premises["table"] == "refusal_selection"]
    assert selection["rows"].tolist() == ["a, b"]  # one reason, both models
    # every unmet premise of every table is listed, and nothing else
    tables = {"refusal_scores", "refusal_selection", "knowledge_baselines", "confidence_entropy_neurons"}
    for name in tables:
        assert set(_table(wd, name)["premise"]) - {""} == set(premises.loc[premises["table"] == name, "premise"])
    report = assert_report_holds_every_figure(wd, config)
    filed = report["categories"]["0. Premises not met"]
    assert [path for paths in filed.values() for path in paths] == ["results/tables/premises.tsv"]
    assert premises.loc[premises["table"] == "confidence_entropy_neurons", "rows"].tolist() == ["a, b"]
