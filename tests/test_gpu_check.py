"""benchmarks/gpu_check.sh, ready for when a GPU is lent: its dry mode runs every step on the
CPU with a tiny model, in bf16 and float32, and must pass its own checks."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from workflow import REPO


def test_gpu_check_dry_run_passes_and_reports_every_step(tmp_path):
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "PYTHON": sys.executable}
    env.pop("OUT", None)
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--dry", "--out", str(out)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["device"] == "cpu" and report["size"] == "tiny" and report["passed"] is True
    ex, pa, stg, gen = (report[k] for k in ("extraction", "patching", "steering", "generation"))
    # bf16 really ran (its error is not zero) and stayed within the stated tolerance
    assert 0 < ex["rel_error_max"] <= report["tolerances"]["extraction_rel_error"]
    assert len(ex["rel_error_max_per_k"]) == 4  # k = 0..L for the tiny model's 3 blocks
    assert 0 < pa["rel_error_max"] <= report["tolerances"]["patching_rel_error"]
    # the batched grid equals one forward pass per cell, in bf16 too
    assert pa["batched_vs_loop_max_abs_diff_bf16"] <= 1e-2 * pa["fp32_grid_spread"]
    assert stg["p_diff_abs_error_max"] <= report["tolerances"]["steering_abs_error"]
    assert 0 <= gen["first_token_agreement"] <= 1 and gen["prompts"] == 16
    assert ex["time_vs_bare_forward_bf16"] > 0 and pa["speedup_vs_loop_bf16"] > 0
