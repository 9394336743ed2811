"""Hooked greedy generation: ptmech's KV-cached loop vs the paper's uncached loop (the whole
sequence recomputed at every step), with directional ablation at every layer active.

    python benchmarks/refusal_generation.py [--prompts 64] [--tokens 16] [--device cpu]
        [--out benchmarks/results/refusal_generation.json]

Model: a randomly initialised Llama (d_model 512, 8 layers, vocabulary of the test
tokenizer) built from its config class. Both loops produce the same tokens (checked); the
numbers are seconds per prompt and the speed-up.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "workflow_scripts"))
sys.path.insert(0, str(HERE.parent / "tests"))


def build_model(folder: Path) -> Path:
    import transformers
    from conftest import make_tokenizer

    tok = make_tokenizer()
    cfg = transformers.LlamaConfig(vocab_size=len(tok), hidden_size=512, intermediate_size=1536,
                                   num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=8,
                                   bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                   pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=str(HERE / "results" / "refusal_generation.json"))
    args = ap.parse_args()

    from conftest import WORDS
    from ptmech.adapter import load_model
    from ptmech.generation import greedy
    from ptmech.interventions import directional_ablation
    from ptmech.residual import hooked

    with tempfile.TemporaryDirectory() as tmp:
        adapter = load_model("bench", {"path": str(build_model(Path(tmp))), "device": args.device,
                                       "dtype": "float32"})
    texts = [" ".join(WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(8 + i % 17)) for i in range(args.prompts)]
    ids = adapter.encode(texts)
    r = torch.randn(adapter.d_model)
    times, tokens = {}, {}
    with hooked(directional_ablation(adapter, r)):
        for name, cached in (("kv_cache", True), ("uncached", False)):
            start = time.perf_counter()
            tokens[name] = greedy(adapter, ids, max_new_tokens=args.tokens, batch_size=args.batch_size,
                                  use_cache=cached).tokens
            times[name] = time.perf_counter() - start
    result = {
        "device": str(adapter.device), "prompts": args.prompts, "new_tokens": args.tokens,
        "batch_size": args.batch_size, "threads": torch.get_num_threads(),
        "seconds_per_prompt": {k: v / args.prompts for k, v in times.items()},
        "speedup": times["uncached"] / times["kv_cache"],
        "same_tokens": bool(torch.equal(tokens["kv_cache"], tokens["uncached"])),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
