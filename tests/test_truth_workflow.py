"""Dry runs of the truth stage: its jobs per model / pair / (source, target) combination, a
clear error naming the key for each bad truth setting, and the stage skipped (not failed)
when a config has nothing to hold out."""

from __future__ import annotations

import copy

import pytest

from workflow import stub_model_folder, copy_workflow, dry_run_error, planned_jobs

pytestmark = pytest.mark.workflow

DATASETS = ["st1", "st2", "st3"]
BASE = {
    "models": {
        "a": {"path": "models/a", "family": "f", "role": "base"},
        "b": {"path": "models/b", "family": "f", "role": "sft"},
        "c": {"path": "models/c", "family": "f", "role": "instruct"},
    },
    "datasets": {ds: {"path": f"{ds}.csv", "kind": "statements"} for ds in DATASETS},
    "prompt_sets": {"statements": {"kind": "statements", "positions": "last", "datasets": DATASETS}},
    "refusal": {"enabled": False},
    "truth": {"steering": {"datasets": ["st1"]}},
}


@pytest.fixture(scope="module")
def wd(tmp_path_factory):
    wd = copy_workflow(tmp_path_factory.mktemp("truth_wf"))
    for m in BASE["models"]:
        stub_model_folder(wd / "models" / m)
    for ds in DATASETS:
        (wd / f"{ds}.csv").write_text("statement,label\n" + "".join(f"a {i} .,{i % 2}\n" for i in range(6)))
    return wd


def _truth_jobs(wd, cfg):
    jobs = planned_jobs(wd, config=cfg)
    return sorted((rule, out) for rule, out in jobs if rule.startswith("truth"))


def test_jobs_per_model_pair_and_steering_condition(wd):
    jobs = _truth_jobs(wd, BASE)
    count = lambda rule: sum(r == rule for r, _ in jobs)
    assert count("truth_probes") == 3 and count("truth_layers") == 1
    # three unordered pairs, base first: (a, b), (a, c), (b, c)
    transfer = sorted(out.split(",")[0] for r, out in jobs if r == "truth_transfer")
    assert transfer == [f"results/truth/pairs/{p}/transfer.tsv" for p in ("a/b", "a/c", "b/c")]
    assert count("truth_pca") == 3 and count("truth_transfer_figure") == 3
    # each model on itself and each ordered pair: 3 + 6 = the paper's four conditions per pair
    steer = sorted(out.split(",")[0] for r, out in jobs if r == "truth_steer")
    assert len(steer) == 9 and "results/truth/steering/a/c/st1.tsv" in steer
    assert "results/truth/steering/c/a/st1.tsv" in steer and "results/truth/steering/b/b/st1.tsv" in steer


def test_steering_can_be_switched_off(wd):
    cfg = copy.deepcopy(BASE)
    cfg["truth"]["steering"]["enabled"] = False
    rules = {r for r, _ in _truth_jobs(wd, cfg)}
    assert "truth_probes" in rules and not rules & {"truth_steer", "truth_steering_table", "truth_steering_figure"}


def test_a_config_with_one_statement_dataset_skips_the_stage(wd):
    cfg = copy.deepcopy(BASE)
    cfg["prompt_sets"]["statements"]["datasets"] = ["st1"]
    del cfg["truth"]
    assert _truth_jobs(wd, cfg) == []


@pytest.mark.parametrize("truth, culprit", [
    ({"datasets": ["st1", "nope"]}, "truth.datasets: dataset 'nope'"),
    ({"steering": {"datasets": ["st4"]}}, "truth.steering.datasets: dataset 'st4'"),
    ({"probes": ["lr"]}, "truth.direction_probe: 'mm'"),
])
def test_bad_truth_settings_name_the_key(wd, truth, culprit):
    cfg = copy.deepcopy(BASE)
    cfg["truth"] = truth
    assert culprit in dry_run_error(wd, cfg)
