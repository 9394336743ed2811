"""Time and peak memory of the chunked LogitVar (ptmech.confidence.neurons.logit_var) at a real
model's shape, with random weights: d_mlp x d_model output rows, V x d_model unembedding.

    python benchmarks/confidence_logit_var.py --d-mlp 14336 --d-model 4096 --vocab 16384 \
        --chunk 4096 --device cpu --out results/benchmarks/confidence_logit_var.tsv

Appends one row per run to --out (shape, chunk, device, threads, seconds, peak memory above
the inputs). On the CPU, peak memory is the process's peak RSS growth (Linux ru_maxrss)."""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow_scripts"))
from ptmech.confidence.neurons import logit_var  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--d-mlp", type=int, default=14336)
    ap.add_argument("--d-model", type=int, default=4096)
    ap.add_argument("--vocab", type=int, default=128256)
    ap.add_argument("--chunk", type=int, default=8192)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="results/benchmarks/confidence_logit_var.tsv")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    gen = torch.Generator().manual_seed(0)
    w_out = torch.randn(a.d_mlp, a.d_model, generator=gen).to(a.device)
    w_u = torch.randn(a.vocab, a.d_model, generator=gen).to(a.device)
    gain = (0.5 + torch.rand(a.d_model, generator=gen)).to(a.device)
    if a.device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    start = time.perf_counter()
    var = logit_var(w_out, w_u, gain, centre=False, chunk_size=a.chunk)
    if a.device.startswith("cuda"):
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    seconds = time.perf_counter() - start
    full = a.d_mlp * a.vocab * 4
    row = {"d_mlp": a.d_mlp, "d_model": a.d_model, "vocab": a.vocab, "chunk": a.chunk, "device": a.device,
           "threads": a.threads, "seconds": round(seconds, 2), "peak_extra_gib": round(peak / 2**30, 3),
           "full_cosine_matrix_gib": round(full / 2**30, 2), "mean_logit_var": float(var.mean())}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame([row]).to_csv(out, sep="\t", index=False, mode="a", header=not out.exists())
    print(row)


if __name__ == "__main__":
    main()
