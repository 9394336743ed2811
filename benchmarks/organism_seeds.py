"""Is the organism recipe robust, or lucky? Train the default trio for several seeds (each
seed draws its own world, initial weights and data stream) and measure every floor of
``ptmech.organism.floors`` on each: one row per (seed, model, floor) in a TSV, with the
torch CPU capability and the package versions it ran with.

    python benchmarks/organism_seeds.py [--seeds 0 1 2 3 4] [--jobs 2] [--threads 1]
        [--out benchmarks/results/organism_seeds.tsv]

``--jobs`` seeds train at once, in separate processes of ``--threads`` threads each (2 x 1
uses 2 cores; the default run trains one model at a time with 2 threads, so this also
varies the float rounding, which is the point). Set ``ATEN_CPU_CAPABILITY=avx2`` (or
``default``) in the environment to force torch's other kernels; the table records which
ran. ``--recipe '{"sft": {"steps": 300}}'`` overrides the recipe as the config's
``organism:`` section does. ``--keep DIR`` keeps each seed's models; ``--keep DIR
--post-only`` then retrains SFT and instruct on the kept bases (a minute a seed, for trying
post-training recipes), and ``--post-seed N`` seeds those two stages with N instead of the
seed (other post-training runs of one base: does the base or the run decide a floor?).
``--candidates`` also writes every refusal-direction candidate of each instruct model, at
every block input (the depth filter off), with its ablation, addition and KL scores on the
validation prompts, to ``<out>_candidates.tsv``: whether any direction at any depth
carries refusal, not only the one the selection chose.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow_scripts"))


def versions() -> dict:
    import importlib.metadata as md

    import torch

    out = {"cpu_capability": torch.backends.cpu.get_cpu_capability()}
    for pkg in ("torch", "transformers", "tokenizers", "numpy", "scikit-learn"):
        out[pkg] = md.version(pkg)
    return out


def candidate_rows(work: Path, world, settings: dict) -> list[dict]:
    """Every refusal-direction candidate of the instruct model under ``work``, at every block
    input (``discard_last_fraction`` 0), scored on the validation prompts."""
    import copy

    from ptmech.adapter import load_model
    from ptmech.organism import checks, floors
    from ptmech.organism.world import instruction_datasets
    from ptmech.refusal.directions import SCORE_COLUMNS

    settings = copy.deepcopy(settings)
    settings["selection"]["discard_last_fraction"] = 0.0
    adapter = load_model(floors.INSTRUCT, {"path": str(work / floors.INSTRUCT), "role": "instruct",
                                           "dtype": "float32", "device": "cpu"})
    frame = checks.own_direction_refusal(adapter, instruction_datasets(world), work / "candidates", settings)["selection"]
    return frame[["k", "position", "direction_norm", *SCORE_COLUMNS]].to_dict("records")


def one_seed(seed: int, threads: int, recipe_json: str, work: Path, post_only: bool = False,
             post_seed: int | None = None, candidates: bool = False) -> dict[str, list[dict]]:
    """Train and measure one seed's trio in this process: ``{"floors": rows of the table,
    "candidates": rows of the candidates table (empty unless ``candidates``)}``.
    ``post_only``: keep the world and base model already in ``work`` and train SFT and
    instruct; ``post_seed``: seed those two stages with it instead of ``seed``."""
    import logging

    from ptmech.config import schema_defaults
    from ptmech.organism import checks, floors, recipe
    from ptmech.organism.world import World

    logging.basicConfig(level=logging.INFO, format=f"seed {seed} %(asctime)s %(message)s", stream=sys.stderr)
    cfg = recipe.with_defaults(json.loads(recipe_json or "{}"))
    cfg["seed"], cfg["threads"] = seed, threads
    start = time.time()
    recipe.build_trio(work, cfg, stages=("sft", "instruct") if post_only else tuple(recipe.MODEL_NAMES),
                      post_seed=post_seed)
    train_s = time.time() - start
    world = World.from_json(work / "world.json")
    settings = schema_defaults(str(REPO / "config.schema.yaml"), "refusal")
    metrics = checks.trio_metrics(work, world, settings, work / "activations")
    table = floors.evaluate(metrics)
    extra = [{"model": m, "metric": k, "op": "", "threshold": float("nan"), "value": v, "passed": True}
             for m, values in metrics.items() for k, v in values.items()
             if k not in {f.metric for f in floors.FLOORS if f.model == m}]
    rows = table.to_dict("records") + extra
    meta = {"seed": seed, "post_seed": seed if post_seed is None else post_seed, "threads": threads,
            "train_seconds": round(train_s, 1), "measure_seconds": round(time.time() - start - train_s, 1),
            **versions()}
    found = candidate_rows(work, world, settings) if candidates else []
    return {"floors": [{**meta, **r} for r in rows], "candidates": [{**meta, **r} for r in found]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--recipe", default="", help="JSON recipe overrides (the organism: config section)")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "organism_seeds.tsv"))
    ap.add_argument("--keep", help="keep each seed's trio in KEEP/seed<N> (default: a temporary folder)")
    ap.add_argument("--post-only", action="store_true",
                    help="reuse the world and base model kept in KEEP/seed<N>; train SFT and instruct only")
    ap.add_argument("--post-seed", type=int, help="seed SFT and instruct with this instead of each seed")
    ap.add_argument("--candidates", action="store_true",
                    help="also write every instruct refusal-direction candidate, at every depth, to <out>_candidates.tsv")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)  # a child: train one seed, JSON rows to stdout
    ap.add_argument("--work", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.post_only and not args.keep and args.one is None:  # a child gets the seed's folder as --work
        ap.error("--post-only needs --keep (the folder whose bases it reuses)")
    if args.one is not None:
        print(json.dumps(one_seed(args.one, args.threads, args.recipe, Path(args.work), args.post_only,
                                  args.post_seed, args.candidates)))
        return

    import pandas as pd

    def run(seed: int) -> dict[str, list[dict]]:
        with tempfile.TemporaryDirectory(prefix=f"organism-seed{seed}-") as tmp:
            work = Path(args.keep) / f"seed{seed}" if args.keep else Path(tmp)
            cmd = [sys.executable, __file__, "--one", str(seed), "--threads", str(args.threads),
                   "--recipe", args.recipe, "--work", str(work)] + (["--post-only"] if args.post_only else [])
            cmd += (["--post-seed", str(args.post_seed)] if args.post_seed is not None else [])
            cmd += ["--candidates"] if args.candidates else []
            out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True)
            return json.loads(out.stdout.strip().splitlines()[-1])

    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(run, args.seeds))
    out = Path(args.out)
    tables = {out: pd.DataFrame([r for res in results for r in res["floors"]])}
    if args.candidates:
        tables[out.with_name(f"{out.stem}_candidates.tsv")] = pd.DataFrame(
            [r for res in results for r in res["candidates"]])
    for path, frame in tables.items():
        frame.insert(1, "recipe", args.recipe or "default")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        frame.to_csv(tmp, sep="\t", index=False)
        tmp.replace(path)
    table = tables[out]
    floor_rows = table[table["op"] != ""]
    print(floor_rows.pivot_table(index=["model", "metric"], columns="seed", values="value").round(3).to_string())
    failed = floor_rows[~floor_rows["passed"].astype(bool)]
    print(f"{len(failed)} of {len(floor_rows)} floors missed; {', '.join(map(str, tables))}")
    if len(failed):
        print(failed[["seed", "model", "metric", "value", "op", "threshold"]].to_string(index=False))


if __name__ == "__main__":
    main()
