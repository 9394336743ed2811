"""The GPU check: the code paths that only a GPU exercises (bf16 compute, CUDA placement,
large batches), on a random Llama-shaped model built locally (no download), each checked
against float32 on the same device and timed.

    python benchmarks/gpu_check.py                       # CUDA, a ~1.1B-parameter model
    python benchmarks/gpu_check.py --dry                 # CPU, a tiny model: the same steps in seconds

Steps, each in bf16 and float32 from the same weights:

1. extraction (``cache.extract``, every residual index, float32 storage) of the organism's
   statements: relative error of bf16 against float32, and prompts/s against a bare forward
   pass of the backbone over the same batches (the floor: no hooks, no output layer);
2. knowledge patching (``knowledge.patching.patch_grid``) of the organism's city pairs: the grid's
   largest bf16 - float32 difference relative to the spread of the float32 grid, and the
   batched grid's speed-up over one forward pass per cell (``patch_grid_loop``);
3. truth steering (``truth.steering.p_true_false``) with a random direction: the largest
   difference of P(TRUE) - P(FALSE);
4. refusal generation (``generation.greedy``) with a random direction ablated
   (``interventions.directional_ablation``): agreement of the first generated token and of
   whole generations (random weights have near ties, so this is reported, not required).

Writes one JSON file (``--out``, default benchmarks/results/gpu_check.json) with every
number, the tolerances and which checks passed; exits 1 if any failed.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow_scripts"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

from ptmech import cache, generation, interventions, residual  # noqa: E402
from ptmech.adapter import ModelAdapter, prepare_tokenizer  # noqa: E402
from ptmech.knowledge import patching  # noqa: E402
from ptmech.knowledge.pairs import build_pairs, skeletons_for  # noqa: E402
from ptmech.organism.tokenizer import build_tokenizer  # noqa: E402
from ptmech.organism.world import build_world, instruction_datasets, statement_datasets  # noqa: E402
from ptmech.truth import steering as st  # noqa: E402

SIZES = {  # TinyLlama-1.1B's shape; the tiny one for --dry
    "1b": dict(hidden_size=2048, num_hidden_layers=22, num_attention_heads=32, num_key_value_heads=4,
               intermediate_size=5632, vocab_size=32000, max_position_embeddings=2048),
    "tiny": dict(hidden_size=64, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                 intermediate_size=128, max_position_embeddings=256),
}
# bf16 keeps 8 bits of mantissa (relative rounding 2^-9 ~ 2e-3 per operation); errors grow
# through the blocks, so the tolerances are loose multiples of that, stated here.
TOLERANCES = {"extraction_rel_error": 0.05, "patching_rel_error": 0.1, "steering_abs_error": 0.05}


def build(size: str, tokenizer, device: str, seed: int = 0) -> dict[str, ModelAdapter]:
    cfg = dict(SIZES[size])
    cfg.setdefault("vocab_size", len(tokenizer))
    config = transformers.LlamaConfig(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                      pad_token_id=tokenizer.pad_token_id, **cfg)
    torch.manual_seed(seed)
    model = transformers.LlamaForCausalLM(config).eval().requires_grad_(False)
    n = sum(p.numel() for p in model.parameters())
    weights = {"float32": copy.deepcopy(model), "bfloat16": model}  # the same weights, cast below
    return {name: ModelAdapter(m.to(device=device, dtype=getattr(torch, name)), tokenizer,
                               name=f"random-llama-{n / 1e6:.0f}M-{name}", role="instruct",
                               template="User: {instruction}\nAssistant:")
            for name, m in weights.items()}


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str):
    sync(device)
    start = time.perf_counter()
    result = fn()
    sync(device)
    return result, time.perf_counter() - start


@torch.inference_mode()
def bare_forward(adapter: ModelAdapter, ids: list[list[int]], batch_size: int) -> None:
    """The backbone over the same length-sorted batches as extraction, nothing kept."""
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    for start in range(0, len(ids), batch_size):
        batch = residual.left_pad([ids[i] for i in order[start:start + batch_size]], adapter.tokenizer.pad_token_id,
                                  adapter.device)
        adapter.backbone(input_ids=batch[0], attention_mask=batch[1], position_ids=batch[2], use_cache=False)


def check_extraction(models: dict, texts: list[str], batch_size: int, device: str, tmp: Path) -> dict:
    acts, seconds = {}, {}
    for adapter in models.values():  # warm-up: CUDA context, kernels, allocator
        bare_forward(adapter, adapter.encode(texts[:batch_size]), batch_size)
    for name, adapter in models.items():
        path = tmp / f"{name}.h5"
        _, seconds[name] = timed(lambda: cache.extract(adapter, texts, path, positions=[-1], batch_size=batch_size,
                                                       storage_dtype="float32", log=lambda m: None), device)
        with cache.Cache(path) as c:
            acts[name] = np.stack([c.resid(k, -1) for k in c.layers], 1)  # [N, K, d]
    ids = models["bfloat16"].encode(texts)
    _, bare = timed(lambda: bare_forward(models["bfloat16"], ids, batch_size), device)
    ref, got = acts["float32"], acts["bfloat16"]
    rel = np.linalg.norm(got - ref, axis=-1) / np.maximum(np.linalg.norm(ref, axis=-1), 1e-12)  # [N, K]
    return {"prompts": len(texts), "tokens": int(sum(map(len, ids))), "batch_size": batch_size,
            "seconds": seconds, "bare_forward_seconds_bf16": bare,
            "prompts_per_second_bf16": len(texts) / seconds["bfloat16"],
            "time_vs_bare_forward_bf16": seconds["bfloat16"] / bare,
            "rel_error_max": float(rel.max()), "rel_error_median": float(np.median(rel)),
            "rel_error_max_per_k": [float(x) for x in rel.max(0)],
            "passed": bool(rel.max() <= TOLERANCES["extraction_rel_error"])}


def check_patching(models: dict, pairs: list[dict], T: int, batch_size: int, device: str) -> dict:
    answers = patching.answer_ids(models["float32"].tokenizer)
    grids, seconds = {}, {}
    for name, adapter in models.items():
        acts = {}
        for idx, a, _ in patching.true_runs(adapter, [p["true_ids"] for p in pairs], T):
            acts.update({int(i): a[b] for b, i in enumerate(idx)})
        patching.patch_grid(adapter, pairs[0]["false_ids"], acts[0], answers, batch_size=batch_size)  # warm-up
        grids[name], seconds[name] = timed(lambda: [patching.patch_grid(adapter, p["false_ids"], acts[i], answers,
                                                                        batch_size=batch_size)
                                                    for i, p in enumerate(pairs)], device)
        if name == "bfloat16":
            loop, loop_seconds = timed(lambda: patching.patch_grid_loop(adapter, pairs[0]["false_ids"], acts[0],
                                                                        answers), device)
            loop_diff = float((loop - grids[name][0]).abs().max())
    ref, got = torch.stack(grids["float32"]), torch.stack(grids["bfloat16"])
    spread = float(ref.max() - ref.min())
    rel = float((got - ref).abs().max()) / max(spread, 1e-12)
    per_pair = seconds["bfloat16"] / len(pairs)
    return {"pairs": len(pairs), "positions": T, "cells_per_pair": T * models["float32"].n_layers,
            "seconds_per_pair": {k: v / len(pairs) for k, v in seconds.items()},
            "loop_seconds_per_pair_bf16": loop_seconds, "speedup_vs_loop_bf16": loop_seconds / per_pair,
            "batched_vs_loop_max_abs_diff_bf16": loop_diff, "fp32_grid_spread": spread,
            "rel_error_max": rel, "passed": bool(rel <= TOLERANCES["patching_rel_error"])}


def check_steering(models: dict, table, device: str) -> dict:
    demos = st.choose_demos(table, 4, seed=1)
    rows = st.select_statements(table, demos, limit=32)
    queries = st.few_shot_queries(rows["statement"], rows.index, demos, seed=1)
    signs = st.signs_for(rows["label"].to_numpy().astype(int))
    rng = np.random.default_rng(0)
    d, L = models["float32"].d_model, models["float32"].n_layers
    vector = rng.standard_normal(d).astype(np.float32)
    vector *= 4.0 / np.linalg.norm(vector)
    out, seconds = {}, {}
    for name, adapter in models.items():
        ids, suffix = st.encode_queries(adapter, queries)
        p, seconds[name] = timed(lambda: st.p_true_false(adapter, ids, suffix, signs, vector=vector,
                                                         ks=range(L // 4 + 1, L // 2 + 1), batch_size=16), device)
        out[name] = p[:, 0] - p[:, 1]
    err = float(np.abs(out["bfloat16"] - out["float32"]).max())
    return {"queries": len(queries), "seconds": seconds, "p_diff_abs_error_max": err,
            "passed": bool(err <= TOLERANCES["steering_abs_error"])}


def check_generation(models: dict, instructions: list[str], batch_size: int, device: str) -> dict:
    d = models["float32"].d_model
    direction = torch.as_tensor(np.random.default_rng(1).standard_normal(d), dtype=torch.float32)
    tokens, seconds = {}, {}
    for name, adapter in models.items():
        ids = adapter.encode([adapter.render_instruction(t) for t in instructions])
        with residual.hooked(interventions.directional_ablation(adapter, direction)):
            gen, seconds[name] = timed(lambda: generation.greedy(adapter, ids, max_new_tokens=16,
                                                                 batch_size=batch_size), device)
        tokens[name] = gen.tokens
    same = (tokens["bfloat16"] == tokens["float32"])
    return {"prompts": len(instructions), "new_tokens": 16, "seconds": seconds,
            "tokens_per_second_bf16": len(instructions) * 16 / seconds["bfloat16"],
            "first_token_agreement": float(same[:, 0].float().mean()),
            "whole_generation_agreement": float(same.all(1).float().mean())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry", action="store_true", help="the CPU and a tiny model: the same steps, in seconds")
    ap.add_argument("--device", default=None, help="default: cuda, or cpu with --dry")
    ap.add_argument("--size", choices=sorted(SIZES), default=None, help="default: 1b, or tiny with --dry")
    ap.add_argument("--prompts", type=int, default=None, help="statements extracted (default 1024, 64 with --dry)")
    ap.add_argument("--batch-size", type=int, default=None, help="default 128, 16 with --dry")
    ap.add_argument("--pairs", type=int, default=4, help="knowledge pairs patched")
    ap.add_argument("--out", default=str(REPO / "benchmarks/results/gpu_check.json"))
    args = ap.parse_args()
    device = args.device or ("cpu" if args.dry else "cuda")
    size = args.size or ("tiny" if args.dry else "1b")
    n_prompts = args.prompts or (64 if args.dry else 1024)
    batch_size = args.batch_size or (16 if args.dry else 128)
    if device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA device here (use --dry for the CPU run)")
    transformers.logging.set_verbosity_error()

    world = build_world(0)
    tokenizer = prepare_tokenizer(build_tokenizer(world))
    tables = statement_datasets(world)
    texts = [s for name in ("cities", "neg_cities", "larger_than", "trans") for s in tables[name]["statement"]]
    texts = (texts * (n_prompts // len(texts) + 1))[:n_prompts]
    doc = build_pairs(tokenizer, tables["cities"]["statement"].tolist(), tables["cities"]["label"].tolist(), "cities",
                      skeletons_for("cities"), max_pairs=args.pairs)
    instructions = instruction_datasets(world)["harmful"]["instruction"].tolist()[:batch_size]

    build_start = time.perf_counter()
    models = build(size, tokenizer, device)
    report = {"device": device, "device_name": torch.cuda.get_device_name(0) if device.startswith("cuda") else
              (platform.processor() or platform.machine()), "size": size, "model": models["float32"].name,
              "parameters": sum(p.numel() for p in models["float32"].model.parameters()),
              "torch": torch.__version__, "transformers": transformers.__version__, "tolerances": TOLERANCES,
              "build_seconds": time.perf_counter() - build_start}
    with tempfile.TemporaryDirectory() as tmp:
        report["extraction"] = check_extraction(models, texts, batch_size, device, Path(tmp))
    print("extraction", json.dumps(report["extraction"])[:300], flush=True)
    report["patching"] = check_patching(models, doc["pairs"], len(doc["columns"]), batch_size, device)
    print("patching", json.dumps(report["patching"]), flush=True)
    report["steering"] = check_steering(models, tables["cities"], device)
    print("steering", json.dumps(report["steering"]), flush=True)
    report["generation"] = check_generation(models, instructions, batch_size, device)
    print("generation", json.dumps(report["generation"]), flush=True)
    if device.startswith("cuda"):
        report["peak_gpu_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    report["passed"] = all(report[k]["passed"] for k in ("extraction", "patching", "steering"))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {out}: {'all checks passed' if report['passed'] else 'A CHECK FAILED'}")
    sys.exit(0 if report["passed"] else 1)


if __name__ == "__main__":
    main()
