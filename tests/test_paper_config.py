"""configs/paper.yaml, the paper's model families, plans a complete run (a dry run: no
weights are needed) on the paper's statement CSVs, which ship in data/paper/."""

from __future__ import annotations

import shutil

import pytest
import yaml

from workflow import REPO, copy_workflow, snakemake

pytestmark = pytest.mark.workflow


def test_paper_config_dry_run_plans_every_stage_for_every_model(tmp_path):
    wd = copy_workflow(tmp_path / "wf")
    shutil.copytree(REPO / "configs", wd / "configs")
    shutil.copytree(REPO / "data", wd / "data")
    config = yaml.safe_load((REPO / "configs" / "paper.yaml").read_text())
    proc = snakemake(wd, "--dry-run", "--configfile", "configs/paper.yaml")
    out = proc.stdout
    for model in config["models"]:
        assert f"results/activations/{model}/statements/cities.h5" in out, model
        assert f"results/activations/{model}/instructions/harmful.h5" in out, model
    for rule in ("truth_steer", "refusal_steer", "knowledge_patch", "confidence_neurons"):
        assert f"rule {rule}:" in out, rule
    assert "organism" not in out  # real models train nothing
