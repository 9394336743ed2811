"""The plan (ptmech.plan) on its own, without Snakemake: families and pairs, what each stage
runs over, the stage switches, the cross-key checks, and the promise that the plan's file
templates are the rules' own outputs."""

from __future__ import annotations

import copy
import re

import pandas as pd
import pytest
import yaml
from snakemake.utils import validate

from ptmech import config as ptcfg
from ptmech import plan as ptplan

from workflow import REPO

STATEMENTS = ["cities", "neg_cities", "larger_than", "trans"]


def base_config(**sections) -> dict:
    """Two families: llama (base, sft, instruct) and qwen (base, instruct), statement and
    instruction datasets, every section at its schema defaults unless given."""
    config = {
        "models": {
            "llama-base": {"path": "hub/llama", "family": "llama", "role": "base"},
            "llama-sft": {"path": "hub/llama-sft", "family": "llama", "role": "sft"},
            "qwen-base": {"path": "hub/qwen", "family": "qwen", "role": "base"},
            "llama-instruct": {"path": "results/models/llama-instruct", "family": "llama", "role": "instruct"},
            "qwen-instruct": {"path": "hub/qwen-it", "family": "qwen", "role": "instruct"},
        },
        "datasets": {**{d: {"path": f"data/{d}.csv", "kind": "statements"} for d in STATEMENTS},
                     "harmful": {"path": "data/harmful.csv", "kind": "instructions"},
                     "harmless": {"path": "data/harmless.csv", "kind": "instructions"}},
        "prompt_sets": {"statements": {"kind": "statements", "positions": "last", "datasets": list(STATEMENTS)},
                        "instructions": {"kind": "instructions", "positions": "post_instruction",
                                         "datasets": ["harmful", "harmless"]}},
        "knowledge": {"datasets": ["cities"]},
    }
    config.update(copy.deepcopy(sections))
    validate(config, str(REPO / "config.schema.yaml"))
    return ptcfg.canonical(config)


def make_plan(config=None, local=None, **sections) -> ptplan.Plan:
    notes = []
    plan = ptplan.Plan(config or base_config(**sections), local or {}, warn=notes.append)
    plan.notes = notes
    return plan


def statements(n_true: int, n_false: int) -> pd.DataFrame:
    return pd.DataFrame({"statement": [f"The city of C{i} is in K{i}." for i in range(n_true + n_false)],
                         "label": [1] * n_true + [0] * n_false})


# --- families and pairs -----------------------------------------------------------------


def test_families_keep_config_order_and_find_their_base():
    plan = make_plan()
    assert plan.families() == {"llama": ["llama-base", "llama-sft", "llama-instruct"],
                               "qwen": ["qwen-base", "qwen-instruct"]}
    assert plan.family_base("llama") == "llama-base"
    no_base = base_config()
    no_base["models"]["qwen-base"]["role"] = "sft"
    assert make_plan(no_base).family_base("qwen") == "qwen-base"  # no base: the first model
    no_base["models"]["qwen-base"]["role"], no_base["models"]["qwen-instruct"]["role"] = "sft", "base"
    assert make_plan(no_base).family_base("qwen") == "qwen-instruct"


def test_default_pairs_are_every_ordered_pair_within_a_family():
    plan = make_plan()
    pairs = plan.ordered_pairs()
    assert len(pairs) == 3 * 2 + 2 * 1 and len(set(pairs)) == len(pairs)
    assert all(plan.family_of(a) == plan.family_of(b) and a != b for a, b in pairs)


def test_unordered_pairs_put_the_base_first_else_config_order_and_appear_once():
    plan = make_plan()
    assert plan.unordered_pairs() == [("llama-base", "llama-sft"), ("llama-base", "llama-instruct"),
                                      ("llama-sft", "llama-instruct"), ("qwen-base", "qwen-instruct")]
    # explicit pairs, in either order and repeated: each once, base first
    plan = make_plan(pairs=[["llama-instruct", "llama-base"], ["llama-base", "llama-instruct"],
                            ["llama-instruct", "llama-sft"]])
    assert plan.unordered_pairs() == [("llama-base", "llama-instruct"), ("llama-sft", "llama-instruct")]
    assert plan.family_pairs("qwen") == []


def test_directions_and_pair_info_cover_both_orders():
    plan = make_plan(pairs=[["llama-base", "llama-instruct"], ["llama-sft", "llama-instruct"]])
    info = {(p["source"], p["target"]): p["direction"] for p in plan.pair_info()}
    assert info == {("llama-base", "llama-instruct"): "forward", ("llama-instruct", "llama-base"): "backward",
                    ("llama-sft", "llama-instruct"): "lateral", ("llama-instruct", "llama-sft"): "lateral"}
    assert plan.direction("qwen-base", "qwen-base") == "single"


def test_every_stage_runs_models_on_themselves_then_their_pairs():
    plan = make_plan(pairs=[["llama-base", "qwen-instruct"], ["llama-base", "llama-sft"]])
    selves = [(m, m) for m in plan.models]
    assert plan.truth.steering_combinations() == selves + [("llama-base", "qwen-instruct"), ("llama-base", "llama-sft")]
    assert plan.refusal.combinations() == plan.truth.steering_combinations()
    # patching across families would need a shared tokenizer: left out
    assert plan.knowledge.combinations() == selves + [("llama-base", "llama-sft")]


# --- files -----------------------------------------------------------------------------


def rule_outputs() -> set[str]:
    """Every quoted results/ path pattern in the rules."""
    text = "\n".join(p.read_text() for p in (REPO / "rules").glob("*.smk"))
    return set(re.findall(r'"(results/[^"]+)"', text))


def test_every_plan_template_is_a_rule_output():
    outputs = rule_outputs()
    missing = {kind: t for kind, t in ptplan.PATHS.items() if t not in outputs and kind != "table"}
    assert not missing, f"templates no rule writes: {missing}"


def test_paths_that_name_two_models_name_the_source_first():
    plan = make_plan()
    s, t = "llama-sft", "llama-instruct"
    steer = plan.truth.steering_input()["tables"]
    assert f"results/truth/steering/{s}/{t}/cities.tsv" in steer
    assert f"results/refusal/steering/{s}/{t}.tsv" in plan.refusal.tables_input()["steering"]
    assert f"results/knowledge/patching/{s}/{t}/cities.h5" in plan.knowledge.tables_input()["patching"]
    assert plan.refusal.steer_input(s, t)["source_direction"] == f"results/refusal/{s}/direction.npz"
    assert plan.refusal.steer_input(s, t)["target_direction"] == f"results/refusal/{t}/direction.json"
    assert plan.knowledge.patch_input(s, t, "cities")["sources"] == f"results/knowledge/sources/{s}/cities.h5"


def test_local_model_folders_are_inputs_and_hub_ids_are_not():
    plan = make_plan()
    assert plan.model_folder("llama-instruct") == {"model": "results/models/llama-instruct"}
    assert plan.model_folder("llama-base") == {}
    assert plan.truth.steer_input("llama-base", "llama-instruct", "cities")["model"] == "results/models/llama-instruct"
    assert "model" not in plan.truth.steer_input("llama-instruct", "llama-base", "cities")


def test_a_family_shares_one_layers_file_chosen_on_its_base():
    plan = make_plan()
    assert plan.truth.layers_path("llama-sft") == plan.truth.layers_path("llama-base")
    assert plan.truth.layers_input("llama")["table"] == "results/truth/llama-base/probes.tsv"
    assert plan.truth.pca_input("llama-base", "llama-sft")["layers"] == "results/truth/families/llama/layers.json"


def test_truth_datasets_default_to_the_prompt_set_and_steering_prefers_cities():
    plan = make_plan()
    assert plan.truth.datasets() == STATEMENTS and plan.truth.steering_datasets() == ["cities"]
    plan = make_plan(truth={"datasets": ["trans", "larger_than"], "train_datasets": ["trans", "larger_than", "cities"]})
    assert plan.truth.all_datasets() == ["trans", "larger_than", "cities"]  # held out first
    assert plan.truth.steering_datasets() == ["trans"] and plan.truth.pca_dataset() == "trans"
    assert plan.truth.probe_input("qwen-base")["caches"][-1] == "results/activations/qwen-base/statements/cities.h5"


# --- switches ------------------------------------------------------------------------


STAGE_FILES = {"truth": "results/tables/truth_", "refusal": "results/tables/refusal_",
               "knowledge": "results/tables/knowledge_", "confidence": "results/tables/confidence_"}


@pytest.mark.parametrize("stage", list(STAGE_FILES))
def test_every_stage_switches_off_alone(stage):
    on = make_plan().all_outputs()
    off = make_plan(**{stage: {"enabled": False}}).all_outputs()
    assert any(o.startswith(STAGE_FILES[stage]) for o in on)
    assert not any(o.startswith(STAGE_FILES[stage]) for o in off)
    others = [p for s, p in STAGE_FILES.items() if s != stage]
    assert [o for o in on if o.startswith(tuple(others))] == [o for o in off if o.startswith(tuple(others))]


def test_premises_follow_the_stages_that_make_premise_tables():
    assert make_plan().premises_outputs() == ["results/tables/premises.tsv"]
    plan = make_plan(refusal={"enabled": False}, knowledge={"enabled": False}, confidence={"enabled": False})
    assert plan.premise_tables() == {} and plan.premises_outputs() == []
    plan = make_plan(refusal={"enabled": False}, knowledge={"enabled": False})
    assert list(plan.premise_tables()) == ["confidence_entropy_neurons"]


def test_stages_with_nothing_to_run_on_skip_with_a_note():
    config = base_config()
    # one statement set (nothing to hold out), and none with a knowledge skeleton
    config["datasets"] = {"facts": {"path": "data/facts.csv", "kind": "statements"},
                          **{k: v for k, v in config["datasets"].items() if k in ("harmful", "harmless")}}
    config["prompt_sets"]["statements"]["datasets"] = ["facts"]
    config["knowledge"]["datasets"] = None
    plan = make_plan(config)
    assert not plan.truth.active and not plan.knowledge.active
    assert any(n.startswith("truth: skipped") for n in plan.notes)
    assert any(n.startswith("knowledge: skipped") for n in plan.notes)
    no_instructions = base_config()
    del no_instructions["prompt_sets"]["instructions"]
    assert not make_plan(no_instructions).refusal.active


def test_organism_floors_read_what_the_config_runs():
    config = base_config()
    config["models"] = {"organism-base": {"path": "results/models/organism-base", "family": "organism", "role": "base"},
                        "organism-instruct": {"path": "results/models/organism-instruct", "family": "organism",
                                              "role": "instruct"}}
    config["pairs"] = None
    plan = make_plan(config)
    assert plan.organism.outputs() == ["results/tables/organism_floors.tsv"]
    inputs = plan.organism.floors_input()
    assert inputs["steering"] == "results/refusal/steering/organism-instruct/organism-instruct.tsv"
    assert inputs["truth_layers"] == "results/truth/families/organism/layers.json"
    config["refusal"]["enabled"] = False
    assert set(make_plan(config).organism.floors_input()) == {"checks", "truth_layers"}
    assert make_plan().organism.outputs() == []  # real models train nothing


# --- checks: one error naming the key -----------------------------------------------------


@pytest.mark.parametrize("sections, key", [
    ({"truth": {"prompt_set": "nope", "datasets": ["cities", "trans"]}}, "truth.prompt_set"),
    ({"truth": {"prompt_set": "instructions", "datasets": ["harmful", "harmless"]}}, "truth.prompt_set"),
    ({"truth": {"datasets": ["cities", "missing"]}}, "truth.datasets"),
    ({"truth": {"steering": {"datasets": ["harmful"]}}}, "truth.steering.datasets"),
    ({"truth": {"datasets": ["cities"], "train_datasets": ["cities"]}}, "truth.train_datasets"),
    ({"truth": {"direction_probe": "lr", "probes": ["mm"]}}, "truth.direction_probe"),
    ({"refusal": {"prompt_set": "statements"}}, "refusal.prompt_set"),
    ({"refusal": {"harmful": "cities"}}, "refusal.harmful"),
    ({"refusal": {"models": {"ghost": {"position": -1}}}}, "refusal.models"),
    ({"knowledge": {"datasets": ["harmful"]}}, "knowledge.datasets"),
    ({"knowledge": {"datasets": ["cities"], "queries": {"ghost": "question"}}}, "knowledge.queries"),
    ({"confidence": {"ablation": {"datasets": ["ghost"]}}}, "confidence.ablation.datasets"),
])
def test_a_bad_cross_reference_names_its_key(sections, key):
    with pytest.raises(ptplan.PlanError) as e:
        make_plan(**sections)
    assert str(e.value).startswith(f"{key}:"), e.value


def test_a_switched_off_stage_checks_nothing():
    make_plan(truth={"enabled": False, "prompt_set": "nope"}, refusal={"enabled": False, "prompt_set": "nope"},
              confidence={"enabled": False, "ablation": {"datasets": ["ghost"]}})


def test_stages_record_what_they_need_of_each_dataset_and_fail_on_a_small_local_one():
    plan = make_plan(truth={"steering": {"n_demos": 4}})
    keys = {d: sorted({n["key"] for n in needs}) for d, needs in plan.needs.items()}
    assert keys["cities"] == ["knowledge.n_true_demos", "truth.datasets", "truth.steering.n_demos"]
    assert keys["harmful"] == ["refusal.harmful"] and plan.needs_sizing("harmful")
    local = {d: statements(3, 3) for d in STATEMENTS}
    plan = make_plan(local=local, truth={"steering": {"n_demos": 4}}, knowledge={"enabled": False})
    assert not plan.needs_sizing("cities")
    with pytest.raises(ptplan.PlanError, match=r"^truth.steering.n_demos: dataset 'cities'"):
        make_plan(local=local, truth={"steering": {"n_demos": 6}}, knowledge={"enabled": False})
    local["trans"] = statements(3, 0)
    with pytest.raises(ptplan.PlanError, match=r"^truth.datasets: dataset 'trans'.* 0 false"):
        make_plan(local=local, knowledge={"enabled": False})


def test_the_default_config_plans_the_organism_run():
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    validate(config, str(REPO / "config.schema.yaml"))
    plan = make_plan(ptcfg.canonical(config))
    assert plan.models == list(ptplan.ORGANISM_MODELS)
    assert len(plan.all_caches()) == 3 * 8
    assert "results/tables/organism_floors.tsv" in plan.all_outputs()
    assert plan.knowledge.datasets() == ["cities", "larger_than"]
    assert plan.confidence.pairs() == [["organism-base", "organism-sft"], ["organism-base", "organism-instruct"],
                                       ["organism-sft", "organism-instruct"]]
