"""The project's promises about itself: the lock pins every requirement of pyproject within
its range, the conda environment pins the same versions, CI runs exactly the README's test
command (which installs with the lock), and Snakemake's linter has nothing to say."""

from __future__ import annotations

import tomllib

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from workflow import REPO, copy_workflow, snakemake


PEERS_SECTION = "# --- peers:"


def lock(section: str = "all") -> dict[str, str]:
    """constraints.txt as canonical name -> pinned version (every line must be ``name==version``):
    ``all`` of it, the ``peers`` extra's section at its end (optional, not installed by CI), or
    the ``core`` above it."""
    pins, in_peers = {}, False
    for line in (REPO / "constraints.txt").read_text().splitlines():
        in_peers = in_peers or line.startswith(PEERS_SECTION)
        if line.strip() and not line.startswith("#"):
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==" and not req.marker, f"constraints.txt: {line!r} is not an exact pin"
            assert canonicalize_name(req.name) not in pins, f"constraints.txt pins {req.name} twice"
            if section == "all" or (section == "peers") == in_peers:
                pins[canonicalize_name(req.name)] = spec.version
    return pins


def pyproject_requirements() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = [r for name, reqs in project["optional-dependencies"].items() for r in reqs]
    return [Requirement(r) for r in project["dependencies"] + extras]


def test_lock_pins_every_requirement_of_pyproject_within_its_range():
    pins = lock()
    for req in pyproject_requirements():
        name = canonicalize_name(req.name)
        if name == "ptmech":  # an extra that pulls in another of ptmech's own extras
            continue
        assert name in pins, f"constraints.txt does not pin {req.name} (required by pyproject.toml)"
        assert req.specifier.contains(pins[name], prereleases=True), \
            f"constraints.txt pins {req.name}=={pins[name]}, outside pyproject's {req.specifier}"


def test_lock_pins_what_the_installed_packages_require():
    """Every dependency of a locked package is locked too (the lock is closed), so pip -c
    leaves nothing to the day's newest release. Checked against this environment's metadata."""
    import importlib.metadata as md

    pins = lock()
    peers = lock("peers")
    assert peers and "nnsight" in peers, f"constraints.txt has no {PEERS_SECTION!r} section pinning nnsight"
    for name in pins:
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            # only the optional peers extra may be absent (CI installs ".[test]"); the core must be here
            assert name in peers, f"{name} is locked outside the peers section but not installed"
            continue
        for dep in dist.requires or []:
            req = Requirement(dep)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                assert canonicalize_name(req.name) in pins, f"{name} requires {req.name}, which is not locked"


def test_conda_env_pins_pyproject_dependencies_at_the_locked_versions():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((REPO / "envs" / "ptmech.yaml").read_text())
    pip = [Requirement(x) for x in next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))]
    pins = lock()
    assert sorted(canonicalize_name(r.name) for r in pip) == sorted(
        canonicalize_name(Requirement(r).name) for r in project["dependencies"])
    for req in pip:
        assert str(req.specifier) == f"=={pins[canonicalize_name(req.name)]}", f"envs/ptmech.yaml: {req}"
    assert "python=3.11" in env["dependencies"]


def test_readme_starts_with_the_two_commands_and_ci_runs_the_second():
    lines = [l for l in (REPO / "README.md").read_text().splitlines() if l.strip()]
    code = [l for l in lines[:12] if l.startswith(("pip ", "python "))]
    assert len(code) >= 2, "the README's first lines must be the run and test commands"
    run, test = code[0], code[1]
    assert "snakemake --cores" in run
    assert "pytest" in test
    for command in (run, test):
        assert "-c constraints.txt" in command, f"{command!r} does not install with the lock"
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert test in ci, f"{test!r} is not a line of .ci/run"


def test_snakemake_lint_is_clean(tmp_path):
    """``snakemake --lint`` exits non-zero on any lint (a rule without a conda env, a
    function mixed in with rules, path arithmetic ...)."""
    wf = copy_workflow(tmp_path / "wf")
    proc = snakemake(wf, "--lint", check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]


def test_rule_scripts_import_the_ptmech_of_their_own_workflow(tmp_path):
    """A workflow copy whose library differs from the installed ptmech (another clone, an
    older release) runs its own: the cache records the copy's version, not the installed one."""
    import h5py
    import pytest

    import ptmech
    from workflow import FAMILY, tiny_family_workflow

    wd = tiny_family_workflow(tmp_path / "wf", {"st.csv": "statement,label\na b .,1\nc d .,0\n"})
    init = wd / "workflow_scripts" / "ptmech" / "__init__.py"
    init.write_text(init.read_text().replace(f'__version__ = "{ptmech.__version__}"', '__version__ = "0+this-copy"'))
    assert "0+this-copy" in init.read_text()
    if ptmech.__file__.startswith(str(wd)):
        pytest.fail("the test process itself imported the copy; the check below would prove nothing")
    cfg = {"models": {"a": FAMILY["a"]}, "datasets": {"st": {"path": "st.csv", "kind": "statements"}},
           "prompt_sets": {"statements": {"kind": "statements", "positions": "last", "datasets": ["st"]}}}
    snakemake(wd, "results/activations/a/statements/st.h5", config=cfg)
    with h5py.File(wd / "results" / "activations" / "a" / "statements" / "st.h5") as f:
        assert f.attrs["ptmech_version"] == "0+this-copy"
