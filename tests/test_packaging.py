"""The project's promises about itself: the conda environment lists what pyproject does,
CI runs exactly the README's test command, and Snakemake's linter has nothing to say."""

from __future__ import annotations

import tomllib

import yaml
from packaging.requirements import Requirement

from workflow import REPO, copy_workflow, snakemake


def _requirements(lines):
    return {Requirement(x).name.lower(): str(Requirement(x).specifier) for x in lines}


def test_conda_env_lists_the_same_packages_as_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((REPO / "envs" / "ptmech.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert _requirements(pip) == _requirements(project["dependencies"])
    assert "python=3.11" in env["dependencies"]


def test_readme_starts_with_the_two_commands_and_ci_runs_the_second():
    lines = [l for l in (REPO / "README.md").read_text().splitlines() if l.strip()]
    code = [l for l in lines[:12] if l.startswith(("pip ", "python "))]
    assert len(code) >= 2, "the README's first lines must be the run and test commands"
    run, test = code[0], code[1]
    assert "snakemake --cores" in run
    assert "pytest" in test
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert test in ci, f"{test!r} is not a line of .ci/run"


def test_snakemake_lint_is_clean(tmp_path):
    """``snakemake --lint`` exits non-zero on any lint (a rule without a conda env, a
    function mixed in with rules, path arithmetic ...)."""
    wf = copy_workflow(tmp_path / "wf")
    proc = snakemake(wf, "--lint", check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
