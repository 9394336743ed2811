"""profiles/slurm for real: a single-node SLURM cluster (Debian's munge, slurmctld, slurmd,
slurmdbd with MariaDB; a counted GRES gpu) comes up on this machine (tests/slurm_cluster.py),
a small extraction workflow runs through ``--profile profiles/slurm``, and its caches equal
those of a local run; a job killed by scancel fails the run promptly. The cluster listens
on the loopback address only and is torn down (its daemons ended by their pids, its state
removed) whatever happens.

Needs root (daemons, munge key, mknod) and the packages, which .ci/run installs (the
fixture installs them with apt-get when they are missing); skipped only without root or
without apt-get."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

import slurm_cluster
from conftest import save_tiny_model
from workflow import REPO, copy_workflow, env as workflow_env, write_config

pytestmark = [pytest.mark.workflow, pytest.mark.slow]

STATEMENTS = "statement,label\n" + "".join(
    f"the city of {c} is in {k} .,{int(ok)}\n"
    for c, k, ok in [("paris", "france", 1), ("rome", "france", 0), ("berlin", "germany", 1),
                     ("rome", "italy", 1), ("paris", "italy", 0), ("berlin", "france", 0)]
)
MODELS = {"a": 0, "b": 1}
TARGETS = [f"results/activations/{m}/statements/st.h5" for m in MODELS]
RUN_TIMEOUT = 420  # seconds for one Snakemake run (3 jobs; about 1 min on an idle machine)


def small_config() -> dict:
    """Two tiny models, one statements dataset; stages that can be switched off are."""
    config = {
        "models": {m: {"path": f"models/{m}", "family": "f", "role": "base" if m == "a" else "instruct"}
                   for m in MODELS},
        "datasets": {"st": {"path": "st.csv", "kind": "statements"}},
        "prompt_sets": {"statements": {"kind": "statements", "positions": "last", "datasets": ["st"]}},
        "extraction": {"batch_size": 2, "storage_dtype": "float32"},
    }
    schema = yaml.safe_load((REPO / "config.schema.yaml").read_text())
    for key, spec in schema["properties"].items():
        if "enabled" in (spec.get("properties") or {}):
            config[key] = {"enabled": False}
    return config


def make_workflow(dest: Path, config: dict) -> Path:
    wd = copy_workflow(dest)
    for name, seed in MODELS.items():
        save_tiny_model("llama", wd / "models" / name, seed=seed)
    (wd / "st.csv").write_text(STATEMENTS)
    write_config(wd, config)
    return wd


def fill_profile(profile_dir: Path, cluster: slurm_cluster.SlurmCluster) -> None:
    """Replace the profile's documented placeholders as a user would."""
    path = profile_dir / "config.yaml"
    text = path.read_text()
    for placeholder in ("YOUR_ACCOUNT", "YOUR_PARTITION"):
        assert placeholder in text, f"profiles/slurm/config.yaml lost its {placeholder} placeholder"
    path.write_text(text.replace("YOUR_ACCOUNT", cluster.account).replace("YOUR_PARTITION", cluster.partition))


def slurm_snakemake(wd: Path, cluster, *args: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "snakemake", "--profile", "profiles/slurm",
           "--slurm-init-seconds-before-status-checks", "2", *args]
    out = open(wd / "snakemake.out", "w")
    return subprocess.Popen(cmd, cwd=wd, env=cluster.env(workflow_env()), stdout=out, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, text=True)


def failure_report(wd: Path, cluster) -> str:
    parts = [f"--- snakemake output ---\n{_tail(wd / 'snakemake.out', 80)}"]
    for log in sorted((wd / ".snakemake" / "slurm_logs").rglob("*.log")) if (wd / ".snakemake").exists() else []:
        parts.append(f"--- {log.relative_to(wd)} ---\n{_tail(log, 40)}")
    parts.append(cluster.run("sacct", "-X", "-P", "-o", "JobID,JobName%40,State,ExitCode,AllocTRES,Reason",
                             check=False).stdout)
    parts.append(cluster.logs())
    return "\n".join(parts)


def _tail(path: Path, n: int) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:]) if path.exists() else "(missing)"


def accounting(cluster, run_id: str, n_jobs: int, timeout: float = 30) -> list[list[str]]:
    """sacct's (JobID, State, Account, AllocTRES) of the run's jobs, once all ``n_jobs``
    have reached the accounting database in a final state (it lags slurmctld a little)."""
    deadline = time.monotonic() + timeout
    while True:
        out = cluster.run("sacct", "-X", "-n", "-P", "--name", run_id, "-o", "JobID,State,Account,AllocTRES").stdout
        jobs = [line.split("|") for line in out.splitlines() if line.strip()]
        done = len(jobs) >= n_jobs and all(j[1] not in ("PENDING", "RUNNING", "COMPLETING") for j in jobs)
        if done or time.monotonic() > deadline:
            return jobs
        time.sleep(0.5)


def wait(proc: subprocess.Popen, timeout: float) -> int | None:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        return None


@pytest.fixture(scope="module")
def cluster():
    reason = slurm_cluster.unavailable_reason()
    if reason:
        pytest.skip(reason)
    slurm_cluster.install_packages()
    with slurm_cluster.SlurmCluster(gpus=2) as c:
        print(f"SLURM cluster up in {c.bringup_seconds:.1f} s {c.step_seconds}")
        yield c


def test_slurm_profile_run_equals_local_run(cluster, tmp_path):
    from ptmech.cache import Cache

    config = small_config()
    local = make_workflow(tmp_path / "local", config)
    remote = make_workflow(tmp_path / "slurm", config)
    fill_profile(remote / "profiles" / "slurm", cluster)

    # The two runs overlap: the SLURM run mostly waits (job start, status checks).
    t0 = time.monotonic()
    run = slurm_snakemake(remote, cluster, *TARGETS, "--configfile", "cfg.yaml")
    try:
        proc = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "1", *TARGETS, "--configfile", "cfg.yaml"],
                              cwd=local, env=workflow_env(), capture_output=True, text=True, timeout=RUN_TIMEOUT)
        t1 = time.monotonic()
        assert proc.returncode == 0, f"local run failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
        rc = wait(run, max(1.0, RUN_TIMEOUT - (t1 - t0)))
    finally:
        if run.poll() is None:
            wait(run, 0)
    t2 = time.monotonic()
    assert rc == 0, (f"SLURM run {'timed out' if rc is None else f'failed ({rc})'}\n"
                     f"{failure_report(remote, cluster)}")
    print(f"local run {t1 - t0:.0f} s, SLURM run {t2 - t0:.0f} s (concurrently)")

    # Every job went through SLURM, in the profile's account; the model jobs got a GPU.
    run_id = re.search(r"SLURM run ID: (\S+)", (remote / "snakemake.out").read_text()).group(1)
    jobs = accounting(cluster, run_id, n_jobs=3)
    assert len(jobs) == 3, jobs
    assert all(state == "COMPLETED" and account == cluster.account for _, state, account, _ in jobs), jobs
    assert sorted("gres/gpu=1" in tres for *_, tres in jobs) == [False, True, True], jobs

    for target in TARGETS:
        with Cache(local / target) as a, Cache(remote / target) as b:
            assert a.layers == b.layers and list(a.positions) == list(b.positions)
            for k in a.layers:
                np.testing.assert_array_equal(a.resid(k, a.positions), b.resid(k, b.positions), err_msg=f"{target} k={k}")
            np.testing.assert_array_equal(a.label("label"), b.label("label"))
            assert a.texts() == b.texts()


SLEEPER = """\
rule all:
    input: "done.txt"

rule sleeper:
    output: "done.txt"
    shell: "sleep 300 && touch {output}"
"""


def test_a_job_killed_by_scancel_fails_the_run(cluster, tmp_path):
    """The profile's status command notices a cancelled job (with sacct's, the plugin
    waits forever: sacct reports the state as "CANCELLED by 0")."""
    wd = tmp_path / "sleeper"
    wd.mkdir()
    (wd / "Snakefile").write_text(SLEEPER)
    shutil.copytree(REPO / "profiles" / "slurm", wd / "profiles" / "slurm")
    fill_profile(wd / "profiles" / "slurm", cluster)
    run = slurm_snakemake(wd, cluster, "--retries", "0")
    try:
        deadline = time.monotonic() + 120
        running = ""
        while time.monotonic() < deadline and not running and run.poll() is None:
            running = cluster.run("squeue", "-h", "-t", "RUNNING", "-o", "%i").stdout.strip()
            time.sleep(0.5)
        assert running, f"the sleeper job never ran\n{failure_report(wd, cluster)}"
        cluster.run("scancel", *running.split())
        t0 = time.monotonic()
        rc = wait(run, 90)
        assert rc is not None, f"Snakemake did not notice the cancelled job in 90 s\n{failure_report(wd, cluster)}"
        assert rc != 0
        print(f"cancelled job noticed after {time.monotonic() - t0:.0f} s")
        assert "CANCELLED" in (wd / "snakemake.out").read_text()
    finally:
        if run.poll() is None:
            wait(run, 0)
