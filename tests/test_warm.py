"""Warm starts (ptmech.warm): a script handed to a warm server runs in a forked child exactly as
it would in a fresh process (arguments, folder, environment, streams, exit status, results),
its child dies with its job, the server leaves when idle, and a server that cannot start
leaves the script to run cold."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from ptmech import resources as ptres
from ptmech import warm
from workflow import env as base_env

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="warm starts are for Linux")

# Most tests preload only the standard library: the server starts in a fraction of a second.
REPORT = textwrap.dedent("""
    import sys
    from ptmech.warm import handoff
    handoff({preload})
    import json, os
    from ptmech import warm
    print(json.dumps({{"child": warm.in_child(), "pid": os.getpid(), "argv": sys.argv[1:], "cwd": os.getcwd(),
                      "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"), "path0": sys.path[0],
                      "main": __name__}}), flush=True)
    what = sys.argv[1] if len(sys.argv) > 1 else ""
    if what == "fail":
        raise RuntimeError("boom in the script")
    if what == "exit":
        sys.exit(int(sys.argv[2]))
    if what == "sleep":
        time = __import__("time")
        time.sleep(600)
""")


@pytest.fixture
def runtime_dir():
    """A short private folder for the sockets (Unix socket paths are limited to 108 bytes);
    every server started in it is stopped afterwards."""
    folder = tempfile.mkdtemp(prefix="pw", dir="/tmp")
    yield folder
    for sock in Path(folder).glob("*/*.sock"):
        for pid in server_pids(sock):
            os.kill(pid, signal.SIGKILL)
    shutil.rmtree(folder, ignore_errors=True)


def server_pids(sock: Path) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"serve" in cmd and str(sock).encode() in cmd:
                pids.append(int(proc.name))
    return pids


def job_env(runtime_dir: str, **extra) -> dict:
    return {**base_env(), "PTMECH_WARM_START": "1", "PTMECH_WARM_IDLE": "20", "XDG_RUNTIME_DIR": runtime_dir, **extra}


def script(tmp_path: Path, preload=("json",)) -> Path:
    path = tmp_path / "job.py"
    path.write_text(REPORT.format(preload=list(preload)))
    return path


def run(path: Path, *args, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(path), *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def report(proc: subprocess.CompletedProcess) -> dict:
    return json.loads(proc.stdout.splitlines()[0])


def test_a_warm_child_runs_the_script_as_a_fresh_process_would(tmp_path, runtime_dir):
    path = script(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    cold = run(path, "a", "b c", env=job_env(runtime_dir, PTMECH_WARM_START="0"), cwd=work)
    first = run(path, "a", "b c", env=job_env(runtime_dir, CUDA_VISIBLE_DEVICES="3"), cwd=work)
    second = run(path, "a", "b c", env=job_env(runtime_dir, CUDA_VISIBLE_DEVICES="5"), cwd=work)
    assert cold.returncode == first.returncode == second.returncode == 0, first.stderr + second.stderr
    c, w1, w2 = report(cold), report(first), report(second)
    assert not c["child"] and w1["child"] and w2["child"]
    assert w1["pid"] != w2["pid"]  # one child per job
    for w in (w1, w2):
        assert {k: w[k] for k in ("argv", "cwd", "path0", "main")} == \
            {k: c[k] for k in ("argv", "cwd", "path0", "main")}
    # the GPU a job was given is the job's own, not the server's
    assert (w1["cuda"], w2["cuda"]) == ("3", "5")
    assert len(list(Path(runtime_dir).glob("*/*.sock"))) == 1  # both jobs used one server


def test_exit_status_and_traceback_are_the_scripts(tmp_path, runtime_dir):
    path = script(tmp_path)
    e = job_env(runtime_dir)
    assert run(path, "exit", "3", env=e, cwd=tmp_path).returncode == 3
    assert run(path, "exit", "0", env=e, cwd=tmp_path).returncode == 0
    failed = run(path, "fail", env=e, cwd=tmp_path)
    assert failed.returncode == 1 and report(failed)["child"]
    assert "RuntimeError: boom in the script" in failed.stderr
    # the traceback starts at the script, as a fresh process prints it
    assert "runpy" not in failed.stderr and "warm.py" not in failed.stderr
    assert failed.stderr.splitlines()[1].strip().startswith(f'File "{path}"')


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/stat").read_text().split()[2] if Path(f"/proc/{pid}/stat").exists() else "X"
    return status != "Z"


def test_a_killed_job_takes_its_child_with_it(tmp_path, runtime_dir):
    path = script(tmp_path)
    out = tmp_path / "out.txt"
    with open(out, "w") as f:
        job = subprocess.Popen([sys.executable, str(path), "sleep"], env=job_env(runtime_dir), cwd=tmp_path,
                               stdout=f, stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    while not out.read_text().strip():
        assert job.poll() is None and time.time() < deadline, out.read_text()
        time.sleep(0.05)
    child = report(subprocess.CompletedProcess([], 0, out.read_text(), ""))["pid"]
    assert child != job.pid and alive(child)
    job.send_signal(signal.SIGTERM)
    job.wait(timeout=30)
    deadline = time.time() + 15
    while alive(child):
        assert time.time() < deadline, "the child outlived its job"
        time.sleep(0.1)


def test_the_server_leaves_when_idle(tmp_path, runtime_dir):
    path = script(tmp_path)
    assert report(run(path, env=job_env(runtime_dir, PTMECH_WARM_IDLE="1"), cwd=tmp_path))["child"]
    (sock,) = Path(runtime_dir).glob("*/*.sock")
    assert server_pids(sock)
    deadline = time.time() + 30
    while sock.exists() or server_pids(sock):
        assert time.time() < deadline, "the idle server did not leave"
        time.sleep(0.2)


def test_off_or_without_a_server_the_script_runs_cold(tmp_path, runtime_dir):
    off = run(script(tmp_path), env=job_env(runtime_dir, PTMECH_WARM_START="0"), cwd=tmp_path)
    assert off.returncode == 0 and not report(off)["child"]
    assert not list(Path(runtime_dir).glob("*/*.sock"))
    # a server that cannot start (its preload fails) leaves the job to run here
    broken = run(script(tmp_path, preload=("json", "no_such_module_anywhere")), env=job_env(runtime_dir),
                 cwd=tmp_path)
    assert broken.returncode == 0 and not report(broken)["child"], broken.stderr
    assert "no_such_module_anywhere" in "".join(p.read_text() for p in Path(runtime_dir).glob("*/*.log"))


def test_a_socket_folder_others_may_enter_is_not_used(tmp_path, runtime_dir):
    """A job hands its environment and streams to whoever listens on the socket: in a folder
    that other users can enter, it runs cold instead."""
    shared = Path(runtime_dir) / f"ptmech-warm-{os.getuid()}"
    shared.mkdir()
    shared.chmod(0o777)
    proc = run(script(tmp_path), env=job_env(runtime_dir), cwd=tmp_path)
    assert proc.returncode == 0 and not report(proc)["child"], proc.stderr
    assert not list(shared.iterdir())
    shared.chmod(0o700)  # the folder as warm starts make it: used
    assert report(run(script(tmp_path), env=job_env(runtime_dir), cwd=tmp_path))["child"]


def test_a_change_of_environment_gets_its_own_server(tmp_path, runtime_dir):
    path = script(tmp_path)
    assert report(run(path, env=job_env(runtime_dir, OMP_NUM_THREADS="1"), cwd=tmp_path))["child"]
    assert report(run(path, env=job_env(runtime_dir, OMP_NUM_THREADS="2"), cwd=tmp_path))["child"]
    assert len(list(Path(runtime_dir).glob("*/*.sock"))) == 2


EXTRACT = textwrap.dedent("""
    import sys
    from ptmech.warm import handoff
    handoff()
    from ptmech import warm
    from ptmech.adapter import load_model
    from ptmech.cache import extract
    model = load_model("m", {"path": sys.argv[1], "device": "cpu", "dtype": "float32"})
    texts = [f"the city of paris is in france . " * (1 + i % 3) for i in range(12)]
    extract(model, texts, sys.argv[2], positions=[-2, -1], batch_size=4, log=lambda s: None)
    print("warm" if warm.in_child() else "cold")
""")


def test_a_model_job_computes_the_same_numbers_warm_and_cold(tiny_model_dir, tmp_path, runtime_dir):
    """The libraries ptmech's jobs use, imported before the fork: an extraction of a tiny
    Llama gives bit-identical activations."""
    from ptmech.cache import Cache

    path = tmp_path / "extract.py"
    path.write_text(EXTRACT)
    model = str(tiny_model_dir("llama"))
    outs = {}
    for mode, flag in (("cold", "0"), ("warm", "1")):
        proc = run(path, model, str(tmp_path / f"{mode}.h5"), env=job_env(runtime_dir, PTMECH_WARM_START=flag),
                   cwd=tmp_path)
        assert proc.returncode == 0 and proc.stdout.split()[-1] == mode, proc.stderr
        with Cache(tmp_path / f"{mode}.h5") as cache:
            outs[mode] = np.stack([cache.resid(k) for k in cache.layers])
    assert outs["cold"].shape == outs["warm"].shape and np.array_equal(outs["cold"], outs["warm"])


@pytest.mark.parametrize("setting, remote, gpus, platform, expected", [
    ("auto", False, False, "linux", True),
    ("auto", True, False, "linux", False),   # inside a cluster job
    ("auto", False, True, "linux", False),   # jobs get a GPU
    ("auto", False, False, "darwin", False),
    (True, True, True, "linux", True),
    (False, False, False, "linux", False),
])
def test_when_jobs_start_warm(setting, remote, gpus, platform, expected):
    assert ptres.use_warm_start(setting, remote, gpus, platform) is expected


def test_a_bad_warm_start_setting_is_named():
    assert ptres.settings({"warm_start": "false"})["warm_start"] is False
    with pytest.raises(ptres.ResourceSettingsError, match="resources.warm_start"):
        ptres.settings({"warm_start": "sometimes"})
