"""Helpers for tests that run Snakemake itself on a temporary copy of the workflow."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
WORKFLOW_FILES = ["Snakefile", "config.yaml", "config.schema.yaml", "rules", "workflow_scripts",
                  "profiles", "report", "envs"]


def copy_workflow(dest: Path) -> Path:
    """A copy of the workflow's own files (no results) in ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in WORKFLOW_FILES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
        elif src.exists():
            shutil.copy2(src, dest / name)
    return dest


def stub_model_folder(path: Path, model_type: str = "llama", n_layers: int = 2) -> Path:
    """A model folder with only a config.json: enough for a dry run, which reads the
    architecture and the number of blocks from it and loads no weights."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({"model_type": model_type, "num_hidden_layers": n_layers}))
    return path


# The family most workflow tests run on: tiny random Llamas a (base) and b (instruct), and c,
# saved too, for the tests that add a model to the config.
FAMILY = {"a": {"path": "models/a", "family": "f", "role": "base"},
          "b": {"path": "models/b", "family": "f", "role": "instruct"}}
EXTRA_MODEL = {"c": {"path": "models/c", "family": "f", "role": "sft"}}


def tiny_family_workflow(dest: Path, files: dict[str, str]) -> Path:
    """A workflow copy in ``dest`` with tiny Llamas ``models/a``, ``b``, ``c`` (seeds 0, 1,
    2) and the data ``files`` (name -> text)."""
    from conftest import save_tiny_model

    wd = copy_workflow(dest)
    for seed, name in enumerate([*FAMILY, *EXTRA_MODEL]):
        save_tiny_model("llama", wd / "models" / name, seed=seed)
    for name, text in files.items():
        (wd / name).write_text(text)
    return wd


def with_extra_model(config: dict) -> dict:
    """A copy of ``config`` with model c added to family f."""
    cfg = copy.deepcopy(config)
    cfg["models"].update(copy.deepcopy(EXTRA_MODEL))
    return cfg


def dry_run_error(workdir: Path, config: dict) -> str:
    """The output of a dry run with ``config``, which must fail."""
    proc = snakemake(workdir, "--dry-run", config=config, check=False)
    assert proc.returncode != 0, "the dry run should have failed"
    return proc.stdout + proc.stderr


def env() -> dict:
    e = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
    e["PYTHONPATH"] = os.pathsep.join([str(REPO / "workflow_scripts"), e.get("PYTHONPATH", "")])
    return e


def snakemake(workdir: Path, *args: str, config: dict | None = None, check: bool = True,
              timeout: int = 900) -> subprocess.CompletedProcess:
    """Run ``snakemake`` in ``workdir`` (a workflow copy); ``config`` is written to
    cfg.yaml and passed with --configfile."""
    cmd = [sys.executable, "-m", "snakemake"]
    if config is not None:  # first: --configfile swallows every argument up to the next option
        write_config(workdir, config)
        cmd += ["--configfile", "cfg.yaml"]
    cmd += ["--cores", "2"]
    proc = subprocess.run(cmd + list(args), cwd=workdir, env=env(), capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}")
    return proc


def write_config(workdir: Path, config: dict) -> None:
    (workdir / "cfg.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


_RULE = re.compile(r"^(?:local)?rule (\w+):\s*$")
_OUTPUT = re.compile(r"^\s+output: (.*)$")


def planned_jobs(workdir: Path, *targets: str, config: dict | None = None) -> list[tuple[str, str]]:
    """The jobs a dry run would execute, as (rule, outputs) pairs, read from Snakemake's
    own job listing (rule ``all`` excluded)."""
    proc = snakemake(workdir, "--dry-run", *targets, config=config)
    text = proc.stdout + proc.stderr
    jobs, rule = [], None
    for line in text.splitlines():
        m = _RULE.match(line)
        if m:
            rule = m.group(1)
            if rule == "all":
                rule = None
            continue
        m = _OUTPUT.match(line)
        if m and rule:
            jobs.append((rule, m.group(1).strip()))
            rule = None
    if not jobs and "Nothing to be done" not in text:
        raise AssertionError(f"could not read the dry run's job list:\n{text[-4000:]}")
    return sorted(jobs)


def _report_variable(html: str, name: str) -> dict:
    m = re.search(rf"var {name} = (\{{.*?\}});\s*\n", html, re.S)
    if not m:
        raise AssertionError(f"no {name} in the report (has Snakemake's report format changed?)")
    return json.loads(m.group(1))


def build_report(workdir: Path, config: dict | None = None, targets: tuple[str, ...] = ()) -> dict:
    """Build Snakemake's self-contained HTML report of a finished run in ``workdir`` (of
    ``targets``, default: everything) and read back what it holds: ``figures`` (path -> its
    rendered caption, HTML), ``tables`` (the same for the tables it shows) and ``categories``
    (category -> subcategory -> paths)."""
    snakemake(workdir, "--report", "report.html", *targets, config=config)
    html = (workdir / "report.html").read_text()
    entries = {path: entry["caption"] for path, entry in _report_variable(html, "results").items()}
    return {"figures": {p: c for p, c in entries.items() if p.endswith(".png")},
            "tables": {p: c for p, c in entries.items() if not p.endswith(".png")},
            "categories": _report_variable(html, "categories")}


REPORTED_TABLES = {"results/tables/premises.tsv"}  # the unmet premises, first in the report


def assert_report_holds_every_figure(workdir: Path, config: dict | None = None,
                                     targets: tuple[str, ...] = ()) -> dict:
    """Every figure the run made is in the report, with a caption whose template rendered,
    filed under a category and subcategory; so is the table of unmet premises when the run
    made one, and no other table. Returns the report's contents (``build_report``)."""
    report = build_report(workdir, config, targets)
    figures, tables = report["figures"], report["tables"]
    made = {str(p.relative_to(workdir)) for p in (workdir / "results" / "figures").rglob("*.png")}
    assert made and set(figures) == made, (sorted(made - set(figures)), sorted(set(figures) - made))
    made_tables = {t for t in REPORTED_TABLES if (workdir / t).exists()}
    assert set(tables) == made_tables, (sorted(tables), sorted(made_tables))
    for path, caption in {**figures, **tables}.items():
        assert len(caption) > 100 and "{{" not in caption and "snakemake." not in caption, (path, caption)
    filed = [path for subs in report["categories"].values() for paths in subs.values() for path in paths]
    assert sorted(filed) == sorted([*figures, *tables]), "every figure and table is filed exactly once"
    return report
