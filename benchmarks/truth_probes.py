"""Time the truth probes (one fit each) at the organism's size and at a 7-8B model's size
on synthetic two-class data, and write the numbers to a TSV.

    python benchmarks/truth_probes.py [benchmarks/results/truth_probes.tsv]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow_scripts"))
from ptmech.truth import probes as truth  # noqa: E402

SIZES = {"organism": (2500, 64), "7b": (8000, 4096)}


def main(out: str = "benchmarks/results/truth_probes.tsv") -> None:
    rows = []
    rng = np.random.default_rng(0)
    for name, (n, d) in SIZES.items():
        y = rng.integers(0, 2, n)
        u = rng.normal(size=d)
        x = truth.centre(rng.normal(size=(n, d)) * 5 + np.outer(y - 0.5, u))
        fits = [("mm", lambda: truth.fit_mm_probe(x, y))]
        fits += [(f"lr/{s}", lambda s=s: truth.fit_lr_probe(x, y, solver=s)) for s in ("liblinear", "lbfgs", "newton-cholesky")]
        for kind, fit in fits:
            t = time.perf_counter()
            probe = fit()
            rows.append({"size": name, "n": n, "d": d, "probe": kind, "seconds": time.perf_counter() - t,
                         "train_accuracy": probe.accuracy(x, y)})
            print(rows[-1], flush=True)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(out, sep="\t", index=False)


if __name__ == "__main__":
    main(*sys.argv[1:])
