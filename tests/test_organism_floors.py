"""The workflow checks its own organism: a trained model that misses a floor is reported,
naming the model and the floor, and a green default run means a good organism."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml

from ptmech.adapter import load_model
from ptmech.organism import checks, floors
from ptmech.organism import world as W

from workflow import REPO, copy_workflow, snakemake

GOOD = {
    floors.BASE: {"fact_recall": 1.0, "fewshot_acc_heldout": 0.95, "fewshot_acc_heldout_min": 0.9,
                  "refusal_rate_harmful": 0.0, "refusal_rate_harmless": 0.0, "probe_accuracy": 0.97},
    floors.SFT: {"refusal_rate_harmful": 1.0, "refusal_rate_harmless": 0.0},
    floors.INSTRUCT: {"refusal_rate_harmful": 1.0, "refusal_rate_harmless": 0.0, "direction_passed_filters": 1.0,
                      "refusal_ablation_ratio": 0.1, "refusal_addition": 0.9},
}


def test_a_good_organism_passes_every_floor():
    table = floors.evaluate(GOOD)
    assert len(table) == len(floors.FLOORS) and table["passed"].all()
    floors.require(table)  # raises nothing


@pytest.mark.parametrize("model, metric, value", [
    (floors.SFT, "refusal_rate_harmless", 1.0),            # refuses everything (issue 14's fresh machine)
    (floors.BASE, "fewshot_acc_heldout_min", 0.52),         # one statement set at chance
    (floors.BASE, "refusal_rate_harmful", 0.05),            # "< 0.05": the boundary fails
    (floors.INSTRUCT, "direction_passed_filters", 0.0),     # the selection fell back
    (floors.INSTRUCT, "refusal_ablation_ratio", 0.51),
])
def test_a_missed_floor_is_reported_naming_the_model_and_the_floor(model, metric, value):
    bad = json.loads(json.dumps(GOOD))
    bad[model][metric] = value
    table = floors.evaluate(bad)
    assert (~table["passed"]).sum() == 1
    with pytest.raises(floors.FloorError, match=rf"{model}: {metric} = {value:.3f}, floor"):
        floors.require(table)


def test_a_missing_metric_fails_and_absent_models_are_not_judged():
    table = floors.evaluate({floors.SFT: {"refusal_rate_harmful": 1.0}})
    assert set(table["model"]) == {floors.SFT}
    assert floors.failures(table) == [f"{floors.SFT}: refusal_rate_harmless = nan, floor <= 0.1"]


def test_a_run_that_leaves_an_organism_model_unanalysed_judges_only_what_it_made():
    """A config without the instruct model has no direction.json: its direction floors are
    not judged (they would read NaN), its behaviour floors are, and so are the base's."""
    metrics = {m: dict(v) for m, v in GOOD.items()}
    for metric in floors.ANALYSIS_METRICS["direction"]:
        del metrics[floors.INSTRUCT][metric]
    names = floors.workflow_metric_names({"checks", "truth_layers"})
    table = floors.evaluate(metrics, metric_names=names)
    assert floors.failures(table) == []
    assert set(table["metric"]) == set(floors.BEHAVIOUR) | {"probe_accuracy"}
    assert floors.failures(floors.evaluate(metrics))  # judging everything would fail on the NaNs


def test_workflow_metrics_read_the_runs_files():
    checks_tables = {m: pd.DataFrame({"metric": list(v), "value": list(v.values())})
                     for m, v in GOOD.items()}
    for m in (floors.SFT, floors.INSTRUCT):  # per-set rows exist only for the base model here
        checks_tables[m] = checks_tables[m][~checks_tables[m]["metric"].str.startswith("fewshot")]
    base = checks_tables[floors.BASE]
    checks_tables[floors.BASE] = pd.concat([base[base["metric"] != "fewshot_acc_heldout_min"], pd.DataFrame(
        {"metric": ["fewshot_acc_heldout_cities", "fewshot_acc_heldout_trans"], "value": [0.98, 0.61]})])
    scores = pd.DataFrame({"operation": ["none", "none"], "instructions": ["harmful", "harmless"],
                           "refusal_score": [0.8, 0.0], "default_coefficient": [True, True]})
    steering = pd.DataFrame({"operation": ["ablation", "addition", "addition"],
                             "instructions": ["harmful", "harmless", "harmless"],
                             "refusal_score": [0.2, 0.3, 0.7], "default_coefficient": [True, False, True]})
    metrics = floors.workflow_metrics(
        checks_tables, truth_layers={"probe_source": "best_heldout", "probe_accuracy": 0.93},
        direction={"how": "automatic", "rule": "fallback: no candidate passed the KL and depth filter"},
        baseline=scores, steering=steering)
    assert metrics[floors.BASE]["fewshot_acc_heldout_min"] == 0.61
    assert metrics[floors.BASE]["probe_accuracy"] == 0.93
    assert metrics[floors.INSTRUCT]["refusal_ablation_ratio"] == pytest.approx(0.25)
    assert metrics[floors.INSTRUCT]["refusal_addition"] == 0.7  # the default coefficient's row
    failed = floors.failures(floors.evaluate(metrics))
    assert failed == [f"{floors.BASE}: fewshot_acc_heldout_min = 0.610, floor >= 0.7",
                      f"{floors.INSTRUCT}: direction_passed_filters = 0.000, floor >= 1"]


def test_an_sft_model_that_never_refuses_misses_its_floor():
    """The checks themselves on a broken "SFT" model (random weights: no refusals)."""
    world = W.build_world(0, n_countries=4, cities_per_country=4, n_words=16, words_per_meaning=2,
                          n_number_pairs=20, instructions={"train": 4, "val": 2, "test": 8})
    from ptmech.organism.tokenizer import build_tokenizer
    from ptmech.organism.train import init_model

    tok = build_tokenizer(world)
    tok.padding_side = "left"
    model = init_model(tok, {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                             "intermediate_size": 32}, seed=0)
    adapter = checks.adapter_for(model, tok, floors.SFT)
    statements = W.statement_datasets(world)
    table = checks.behaviour_table(adapter, world, statements, W.instruction_datasets(world),
                                   W.few_shot_samples(statements), max_new_tokens=4)
    verdict = floors.evaluate({floors.SFT: floors.behaviour_metrics(table)})
    with pytest.raises(floors.FloorError, match=r"organism-sft: refusal_rate_harmful = 0\.000, floor >= 0\.9"):
        floors.require(verdict)


@pytest.mark.workflow
def test_the_organism_rules_fail_naming_the_model_and_floor(tmp_path):
    """A base model pretrained for 8 steps knows nothing: its check job fails the run,
    naming organism-base and the fact-recall floor, and leaves no checks table behind;
    with organism.checks.floors: false the run goes on and the log says what was missed."""
    wd = copy_workflow(tmp_path / "wf")
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    cfg["organism"] = {"world": {"n_countries": 4, "cities_per_country": 4, "n_words": 16, "words_per_meaning": 2,
                                 "n_number_pairs": 20, "instructions": {"train": 8, "val": 4, "test": 8}},
                       "pretrain": {"steps": 8, "curriculum_steps": 2, "warmup": 2}}
    target = "results/organism/checks/organism-base.tsv"
    proc = snakemake(wd, target, config=cfg, check=False)
    assert proc.returncode != 0
    log = (wd / "logs" / "organism_check" / "organism-base.log").read_text()
    for text in (proc.stderr + proc.stdout, log):
        assert "organism-base: fact_recall = " in text and "floor >= 0.95" in text, text[-3000:]
    assert "organism.checks.floors: false" in log
    assert not (wd / target).exists()

    cfg["organism"]["checks"] = {"floors": False}
    snakemake(wd, target, config=cfg)
    assert (wd / target).exists()
    log = (wd / "logs" / "organism_check" / "organism-base.log").read_text()
    assert "misses floors" in log and "organism-base: fact_recall" in log
