"""Benchmark: the batched patching grids (``ptmech.knowledge.patching.patch_pairs``, what the knowledge
stage runs: pairs of one prompt length share passes) against one forward pass per (block, position)
cell (``patch_grid_loop``, the paper's way), on the CPU.

Models: the organism's base model (results/models/organism-base when it has been trained,
else an untrained model of the same size: speed does not depend on the weights) and a
~100M-parameter random Llama (GPT-2-small sized: 12 blocks, d_model 768), with the
organism's vocabulary and with GPT-2's (50,257), all with the organism's tokenizer, on pairs of the organism's cities dataset (the default few-shot
query: 2 TRUE and 2 FALSE demonstrations).

Writes benchmarks/results/knowledge_patching.json and prints it. A few minutes on 2 cores:

    python benchmarks/knowledge_patching.py [--threads 2] [--organism results/models/organism-base]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow_scripts"))

import torch  # noqa: E402
import transformers  # noqa: E402

from ptmech.adapter import ModelAdapter, load_model, prepare_tokenizer  # noqa: E402
from ptmech.knowledge import patching  # noqa: E402
from ptmech.knowledge.pairs import build_pairs, skeletons_for  # noqa: E402
from ptmech.organism.tokenizer import build_tokenizer  # noqa: E402
from ptmech.organism.world import build_world, statement_datasets  # noqa: E402

GPT2_SMALL_LLAMA = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, num_key_value_heads=12,
                        intermediate_size=3072, max_position_embeddings=512)
GPT2_VOCAB = 50257
ORGANISM_SIZE = dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4,
                     intermediate_size=256, max_position_embeddings=256)


def random_llama(tokenizer, size: dict, seed: int = 0) -> ModelAdapter:
    cfg = transformers.LlamaConfig(**{"vocab_size": len(tokenizer), **size}, bos_token_id=tokenizer.bos_token_id,
                                   eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    model = transformers.LlamaForCausalLM(cfg).eval().requires_grad_(False)
    return ModelAdapter(model, tokenizer, name=f"random-llama-{sum(p.numel() for p in model.parameters()) / 1e6:.0f}M")


def bench(adapter: ModelAdapter, pairs: list[dict], T: int, loop_pairs: int, loop_positions: int,
          configs: list[tuple[int, bool]]) -> dict:
    """Seconds per pair of the one-forward-per-cell loop and of ``patch_pairs`` (all the
    pairs) with each (batch_size, reuse_clean_run) config. The loop is timed on the last ``loop_positions``
    positions of ``loop_pairs`` pairs and scaled to the whole grid (every cell of the loop
    is one full forward pass of the same prompt, so its cost is linear in the cells)."""
    answers = patching.answer_ids(adapter.tokenizer)
    acts = {}
    for idx, a, _ in patching.true_runs(adapter, [p["true_ids"] for p in pairs], T):
        acts.update({int(i): a[b].float() for b, i in enumerate(idx)})
    L = adapter.n_layers
    out = {"model": adapter.name, "parameters": sum(p.numel() for p in adapter.model.parameters()),
           "n_layers": L, "d_model": adapter.d_model, "positions": T, "cells_per_pair": T * L,
           "prompt_tokens": sum(len(p["false_ids"]) for p in pairs) / len(pairs)}
    patching.patch_grid(adapter, pairs[0]["false_ids"], acts[0], answers, batch_size=configs[0][0])  # warm-up

    start = time.perf_counter()
    loops = [patching.patch_grid_loop(adapter, pairs[i]["false_ids"], acts[i][:, -loop_positions:], answers)
             for i in range(loop_pairs)]
    loop_cells = loop_pairs * loop_positions * L
    out["loop_seconds_per_cell"] = (time.perf_counter() - start) / loop_cells
    out["loop_seconds_per_pair"] = out["loop_seconds_per_cell"] * T * L
    out["loop_cells_timed"] = loop_cells
    runs = []
    for bs, reuse in configs:
        start = time.perf_counter()
        grids = torch.as_tensor(patching.patch_pairs(adapter, pairs, acts.__getitem__, answers, batch_size=bs,
                                                     reuse_clean_run=reuse, log=lambda s: None))
        sec = (time.perf_counter() - start) / len(pairs)
        err = max(float((grids[i][-loop_positions:] - loops[i]).abs().max()) for i in range(loop_pairs))
        runs.append({"batch_size": bs, "reuse_clean_run": reuse, "seconds_per_pair": sec,
                     "speedup_vs_loop": out["loop_seconds_per_pair"] / sec, "max_abs_diff_vs_loop": err,
                     "pairs_timed": len(pairs)})
        print(f"  {adapter.name}: batch {bs}, reuse_clean_run {reuse}: {sec:.3f} s/pair, "
              f"{runs[-1]['speedup_vs_loop']:.1f}x the loop ({out['loop_seconds_per_pair']:.2f} s/pair)", flush=True)
    out["batched"] = runs
    default = next((r for r in runs if r["batch_size"] == default_batch_size() and r["reuse_clean_run"]), None)
    out["default_speedup_vs_loop"] = default and default["speedup_vs_loop"]
    return out


def default_batch_size() -> int:
    """knowledge.batch_size's default, from config.schema.yaml."""
    import yaml

    schema = yaml.safe_load((REPO / "config.schema.yaml").read_text())
    return int(schema["properties"]["knowledge"]["properties"]["batch_size"]["default"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1: the compute-bound comparison; more threads on a shared machine "
                         "mostly measure contention)")
    ap.add_argument("--organism", default=str(REPO / "results/models/organism-base"))
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 16, 32, 64, 128],
                    help="grid rows per forward pass to time (each with the clean run reused)")
    ap.add_argument("--big-pairs", type=int, default=2, help="pairs timed on the ~100M model")
    ap.add_argument("--out", default=str(REPO / "benchmarks/results/knowledge_patching.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()

    world = build_world(0)
    table = statement_datasets(world)["cities"]
    results = {"threads": args.threads, "default_batch_size": default_batch_size(), "torch": torch.__version__,
               "transformers": transformers.__version__, "machine": platform.processor() or platform.machine(),
               "cpu_count": os.cpu_count(), "dataset": "organism cities, 2 TRUE + 2 FALSE demonstrations", "models": []}

    if (Path(args.organism) / "config.json").exists():
        organism = load_model("organism-base", {"path": args.organism, "dtype": "float32", "device": "cpu"})
        trained = True
    else:
        organism = random_llama(prepare_tokenizer(build_tokenizer(world)), ORGANISM_SIZE)
        organism.name, trained = "organism-sized random llama (organism not trained yet)", False
    tok = organism.tokenizer
    doc = build_pairs(tok, table["statement"].tolist(), table["label"].tolist(), "cities", skeletons_for("cities"),
                      max_pairs=8)
    pairs, T = doc["pairs"], len(doc["columns"])
    configs = [(bs, True) for bs in args.batch_sizes] + [(max(args.batch_sizes), False)]

    r = bench(organism, pairs, T, loop_pairs=2, loop_positions=T, configs=configs)
    r["trained"] = trained
    results["models"].append(r)
    big = random_llama(tok, GPT2_SMALL_LLAMA)
    r = bench(big, pairs[:args.big_pairs], T, loop_pairs=1, loop_positions=2, configs=configs)
    results["models"].append(r)
    # the same with GPT-2's vocabulary (50,257 rows of unembedding; the organism's tokenizer
    # uses the first ids only, which changes nothing about the cost)
    big = random_llama(tok, {**GPT2_SMALL_LLAMA, "vocab_size": GPT2_VOCAB})
    big.name += " (GPT-2 vocabulary)"
    r = bench(big, pairs[:args.big_pairs], T, loop_pairs=1, loop_positions=2, configs=configs)
    results["models"].append(r)

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
