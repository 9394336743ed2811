"""Dry runs of the refusal stage: its jobs per model and ordered pair, the stage skipped
(not failed) by a config without instructions, and a clear error naming the key for each
bad refusal setting."""

from __future__ import annotations

import copy

import pytest

from workflow import stub_model_folder, copy_workflow, dry_run_error, planned_jobs

pytestmark = pytest.mark.workflow

BASE = {
    "models": {
        "a": {"path": "models/a", "family": "f", "role": "base"},
        "b": {"path": "models/b", "family": "f", "role": "sft"},
        "c": {"path": "models/c", "family": "f", "role": "instruct"},
        "d": {"path": "models/d", "family": "g", "role": "base"},
    },
    "datasets": {
        "harmful": {"path": "harmful.csv", "kind": "instructions"},
        "harmless": {"path": "harmless.csv", "kind": "instructions"},
    },
    "prompt_sets": {"instructions": {"kind": "instructions", "positions": "post_instruction",
                                     "datasets": ["harmful", "harmless"]}},
    "truth": {"enabled": False},
    "knowledge": {"enabled": False},
    "confidence": {"ablation": {"datasets": []}},
}


@pytest.fixture(scope="module")
def wd(tmp_path_factory):
    wd = copy_workflow(tmp_path_factory.mktemp("refusal_wf"))
    for m in BASE["models"]:
        stub_model_folder(wd / "models" / m)
    for ds in ("harmful", "harmless"):
        (wd / f"{ds}.csv").write_text("instruction,split\nhow to a,train\nhow to b,val\nhow to c,test\n")
    (wd / "st.csv").write_text("statement,label\na b .,1\na c .,0\n")
    return wd


def _refusal_jobs(wd, cfg):
    return sorted((rule, out) for rule, out in planned_jobs(wd, config=cfg) if rule.startswith("refusal"))


def test_jobs_per_model_and_ordered_pair(wd):
    jobs = _refusal_jobs(wd, BASE)
    count = lambda rule: sum(r == rule for r, _ in jobs)
    for rule in ("refusal_candidates", "refusal_select", "refusal_baseline", "refusal_pca"):
        assert count(rule) == 4, rule
    # every model's own direction, and each ordered pair within a family (3 x 2 in f, none in g)
    steer = sorted(out.split(",")[0] for r, out in jobs if r == "refusal_steer")
    assert len(steer) == 4 + 6
    assert "results/refusal/steering/a/c.jsonl" in steer and "results/refusal/steering/c/a.jsonl" in steer
    assert "results/refusal/steering/d/d.jsonl" in steer and not any("/d/a" in s or "/a/d" in s for s in steer)
    assert count("refusal_tables") == 1 and count("refusal_scores_figure") == 2
    assert count("refusal_cosine_figure") == 1  # family g has one model: nothing to compare


def test_a_config_without_instructions_skips_the_stage(wd):
    cfg = copy.deepcopy(BASE)
    cfg["datasets"] = {"st": {"path": "st.csv", "kind": "statements"}}
    cfg["prompt_sets"] = {"statements": {"kind": "statements", "positions": "last", "datasets": ["st"]}}
    assert _refusal_jobs(wd, cfg) == []


def test_refusal_can_be_switched_off(wd):
    cfg = copy.deepcopy(BASE)
    cfg["refusal"] = {"enabled": False}
    assert _refusal_jobs(wd, cfg) == []


@pytest.mark.parametrize("refusal, culprit", [
    ({"prompt_set": "nope"}, "refusal.prompt_set: prompt set 'nope'"),
    ({"harmful": "harmless2"}, "refusal.harmful: dataset 'harmless2'"),
    ({"models": {"zz": {"position": -1}}}, "refusal.models: model 'zz'"),
    ({"addition": {"sites": ["resid_mid"]}}, "resid_mid"),
    ({"models": {"a": {"position": 2}}}, "refusal.models.a.position"),
])
def test_bad_refusal_settings_name_the_key(wd, refusal, culprit):
    cfg = copy.deepcopy(BASE)
    cfg["refusal"] = refusal
    assert culprit in dry_run_error(wd, cfg)
