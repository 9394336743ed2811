"""An extraction killed mid-write (SIGKILL) leaves nothing at the output path, and the
rerun completes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

from ptmech.cache import Cache
from workflow import env

SCRIPT = textwrap.dedent("""
    import sys
    from ptmech.adapter import load_model
    from ptmech.cache import extract
    model = load_model("m", {"path": sys.argv[1], "device": "cpu", "dtype": "float32"})
    texts = [f"the city of paris is in france . " * (1 + i % 7) for i in range(int(sys.argv[3]))]
    extract(model, texts, sys.argv[2], positions=[-1], batch_size=1, log=lambda s: print(s, flush=True))
    print("finished", flush=True)
""")


def test_sigkill_mid_write_leaves_nothing_and_rerun_completes(tiny_model_dir, tmp_path):
    out = tmp_path / "acts" / "x.h5"
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    cmd = [sys.executable, str(script), str(tiny_model_dir("llama")), str(out)]
    proc = subprocess.Popen(cmd + ["5000"], env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    while not list(out.parent.glob(".x.h5.*.partial")):  # the writer has started writing
        assert proc.poll() is None, proc.stdout.read().decode()
        assert time.time() < deadline, "extraction never started writing"
        time.sleep(0.05)
    time.sleep(1.0)
    assert proc.poll() is None, "extraction finished before it could be killed; give it more prompts"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists()

    rerun = subprocess.run(cmd + ["50"], env=env(), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    with Cache(out) as c:
        assert len(c) == 50
    assert [p.name for p in out.parent.iterdir()] == ["x.h5"]  # the killed run's partial is gone
