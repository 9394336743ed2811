"""Real Snakemake runs on a temporary copy of the workflow prove what reruns: adding a
model adds only its jobs, adding a dataset only its jobs, changing analysis settings
re-extracts nothing, an unchanged config reruns nothing."""

from __future__ import annotations

import copy

import pytest

from workflow import FAMILY, planned_jobs, snakemake, tiny_family_workflow, with_extra_model

pytestmark = pytest.mark.workflow

STATEMENTS = "statement,label\n" + "".join(
    f"the city of {c} is in {k} .,{int(ok)}\n"
    for c, k, ok in [("paris", "france", 1), ("rome", "france", 0), ("berlin", "germany", 1),
                     ("rome", "italy", 1), ("paris", "italy", 0), ("berlin", "france", 0)]
)
INSTRUCTIONS = "instruction,split\nhow to visit paris ?,train\nhow to burn down rome ?,train\ndescribe berlin,test\n"


@pytest.fixture(scope="module")
def small_workflow(tmp_path_factory):
    """A workflow copy with two tiny models, two datasets, run once for real."""
    wd = tiny_family_workflow(tmp_path_factory.mktemp("wf"), {
        "st.csv": STATEMENTS, "st2.csv": STATEMENTS.replace("paris", "rome"), "ins.csv": INSTRUCTIONS})
    config = {
        "models": copy.deepcopy(FAMILY),
        "datasets": {
            "st": {"path": "st.csv", "kind": "statements"},
            "ins": {"path": "ins.csv", "kind": "instructions"},
        },
        "prompt_sets": {
            "statements": {"kind": "statements", "positions": "last", "datasets": ["st"]},
            "instructions": {"kind": "instructions", "positions": "post_instruction", "datasets": ["ins"]},
        },
        "extraction": {"batch_size": 2},
        # Only the cache and the cheapest analysis (entropy neurons, from weights) run here;
        # the other stages have their own workflow tests and need more datasets.
        "truth": {"enabled": False},
        "refusal": {"enabled": False},
        "knowledge": {"enabled": False},
    }
    snakemake(wd, config=config)
    return wd, config


def _extracted(jobs):
    return sorted(out for rule, out in jobs if rule == "extract")


def test_unchanged_config_reruns_nothing(small_workflow):
    wd, config = small_workflow
    assert planned_jobs(wd, config=config) == []


def test_adding_a_model_runs_only_its_jobs(small_workflow):
    wd, config = small_workflow
    cfg = with_extra_model(config)
    jobs = planned_jobs(wd, config=cfg)
    assert _extracted(jobs) == ["results/activations/c/instructions/ins.h5",
                                "results/activations/c/statements/st.h5"]
    assert all("/a/" not in out and "/b/" not in out for _, out in jobs)


def test_adding_a_dataset_runs_only_its_jobs(small_workflow):
    wd, config = small_workflow
    cfg = copy.deepcopy(config)
    cfg["datasets"]["st2"] = {"path": "st2.csv", "kind": "statements"}
    cfg["prompt_sets"]["statements"]["datasets"].append("st2")
    jobs = planned_jobs(wd, config=cfg)
    assert sorted(jobs) == sorted([
        ("dataset", "results/data/st2.tsv"),
        ("extract", "results/activations/a/statements/st2.h5"),
        ("extract", "results/activations/b/statements/st2.h5"),
    ])


def test_analysis_settings_re_extract_nothing(small_workflow):
    wd, config = small_workflow
    cfg = copy.deepcopy(config)
    cfg["models"]["a"]["layers"] = {"truth_probe": 2, "refusal": 1}
    cfg["confidence"] = {"n_neurons": 3, "top_norm_fraction": 0.5}
    jobs = planned_jobs(wd, config=cfg)
    assert jobs, "the analysis change should rerun the analysis"
    assert _extracted(jobs) == []
    assert {rule for rule, _ in jobs} <= {"confidence_tables", "confidence_scatter", "confidence_venn",
                                          "confidence_iou_figure", "premises"}


def test_extraction_settings_do_re_extract(small_workflow):
    """The converse, so the tests above can fail: a change that alters the cache reruns it."""
    wd, config = small_workflow
    cfg = copy.deepcopy(config)
    cfg["prompt_sets"]["statements"]["positions"] = {"last_n": 2}
    assert _extracted(planned_jobs(wd, config=cfg)) == ["results/activations/a/statements/st.h5",
                                                        "results/activations/b/statements/st.h5"]


def _rewritten(config: dict) -> str:
    """``config`` as another YAML text of the same meaning: keys in reverse order at every
    level below the ordered sections, flow style, and 1.0 for every integer but booleans."""
    import yaml

    def shuffle(value, top=False):
        if isinstance(value, dict):
            keys = list(value) if top else list(reversed(sorted(value)))
            return {k: shuffle(value[k]) for k in keys}
        if isinstance(value, list):
            return [shuffle(v) for v in value]
        return value

    return yaml.safe_dump({k: shuffle(v, top=k in ("models", "datasets", "prompt_sets"))
                           for k, v in reversed(list(config.items()))}, default_flow_style=True, sort_keys=False)


def _as_workflow_sees_it(config: dict) -> str:
    """What every job's params are sliced from: the config validated against the schema
    (defaults filled in) and made canonical, as rules/common.smk does, written as repr
    (which is how Snakemake compares params)."""
    from snakemake.utils import validate

    from ptmech import config as ptcfg
    from workflow import REPO

    cfg = copy.deepcopy(config)
    validate(cfg, str(REPO / "config.schema.yaml"))
    return repr(ptcfg.canonical(cfg))


def test_the_default_config_rewritten_without_changing_its_meaning_gives_the_same_params():
    """The default config with reordered keys, flow style, explicit defaults and 0.25 as
    0.250: every slice a job receives is the same."""
    import yaml
    from snakemake.utils import validate

    from workflow import REPO

    default = yaml.safe_load((REPO / "config.yaml").read_text())
    explicit = copy.deepcopy(default)
    validate(explicit, str(REPO / "config.schema.yaml"))  # every default written out
    rewritten = yaml.safe_load(_rewritten(explicit).replace("0.25", "0.250"))
    assert list(rewritten["truth"]) != list(default["truth"])  # the rewrite did reorder
    assert _as_workflow_sees_it(rewritten) == _as_workflow_sees_it(default)
    # and the converse: a change of meaning is seen
    changed = copy.deepcopy(default)
    changed["confidence"]["n_neurons"] = 11
    assert _as_workflow_sees_it(changed) != _as_workflow_sees_it(default)


def test_a_config_rewritten_without_changing_its_meaning_reruns_nothing(small_workflow):
    """The real run's config, rewritten (reordered keys, flow style, explicit defaults,
    2.0 for 2): a dry run plans nothing."""
    import yaml
    from snakemake.utils import validate

    from workflow import REPO

    wd, config = small_workflow
    explicit = copy.deepcopy(config)
    validate(explicit, str(REPO / "config.schema.yaml"))
    text = _rewritten(explicit).replace("batch_size: 2", "batch_size: 2.0")
    (wd / "rewritten.yaml").write_text(text)
    assert "batch_size: 2.0" in text
    proc = snakemake(wd, "--dry-run", "--configfile", "rewritten.yaml")
    assert "Nothing to be done" in proc.stdout + proc.stderr, (proc.stdout + proc.stderr)[-3000:]
