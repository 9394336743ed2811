"""Jobs that load no model import no torch and no transformers: importing them costs 2 to 3 s
per job, most of a table or figure job's time (issue 18). Each rule script outside
``MODEL_SCRIPTS``, with every import it makes (the top of the file and inside functions),
and the library modules that read what model jobs wrote, are imported in a fresh interpreter
that must end without torch or transformers loaded."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest

from workflow import REPO

SCRIPTS = REPO / "workflow_scripts"
# rule scripts that load a model or its tokenizer (torch and transformers are their job)
MODEL_SCRIPTS = {
    "activations/extract.py", "confidence/ablation.py", "confidence/neurons.py", "knowledge/pairs.py",
    "knowledge/patch.py", "knowledge/sources.py", "models/from_gguf.py", "organism/check.py", "organism/train.py",
    "organism/world.py", "refusal/selection.py", "refusal/steer.py", "truth/steer.py",
}
# what the light jobs read model jobs' files with
READERS = ["ptmech.cache", "ptmech.knowledge.results", "ptmech.refusal.candidates", "ptmech.confidence.selection",
           "ptmech.truth.probes", "ptmech.truth.tables", "ptmech.premises", "ptmech.plan"]
LIGHT = sorted(str(p.relative_to(SCRIPTS)) for p in SCRIPTS.glob("*/*.py")
               if p.parent.name != "ptmech" and str(p.relative_to(SCRIPTS)) not in MODEL_SCRIPTS)


def imports_of(path) -> list[str]:
    """Every import statement of a file, as source lines, wherever it sits in the file."""
    tree = ast.parse(path.read_text())
    return [ast.unparse(node) for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))]


def loaded_after(statements: list[str]) -> set[str]:
    code = "\n".join(statements + ["import sys", "print(' '.join(m for m in ('torch', 'transformers') "
                                   "if m in sys.modules))"])
    out = subprocess.run([sys.executable, "-c", code], cwd=SCRIPTS, capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_the_model_scripts_exist():
    """The exemption list names real scripts (a renamed script must not stay exempt by accident)."""
    assert all((SCRIPTS / s).exists() for s in MODEL_SCRIPTS)
    assert len(LIGHT) >= 20


@pytest.mark.parametrize("script", LIGHT)
def test_a_job_without_a_model_imports_no_torch(script):
    statements = imports_of(SCRIPTS / script)
    assert statements, f"{script} imports nothing?"
    assert not loaded_after(statements), f"{script} imports torch or transformers"


def test_the_readers_import_no_torch():
    assert not loaded_after([f"import {m}" for m in READERS])


def test_the_check_can_fail():
    """The same check on a model script finds torch."""
    assert "torch" in loaded_after(imports_of(SCRIPTS / "activations/extract.py"))
