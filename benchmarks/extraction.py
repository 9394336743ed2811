"""Extraction throughput vs a bare forward pass, and peak memory vs number of prompts.

    python benchmarks/extraction.py [--prompts 1000] [--big 8000] [--out benchmarks/results/extraction.json]

Model: a randomly initialised GPT-2-small-sized model (124M parameters) built from its
config class on the CPU. Same prompts, same batch size, same length-sorted batches for
both paths. "bare" is the model's ordinary forward (logits, no hidden states kept);
"extraction" is ptmech's code path (hooks, position gathering, HDF5 streaming, every
residual index k = 0..L at the last token). Peak memory is the peak RSS of a fresh
process extracting N prompts, for two values of N.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
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

    if (folder / "config.json").exists():
        return folder
    tok = make_tokenizer()
    cfg = transformers.GPT2Config(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(cfg)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def prompts(n: int) -> list[str]:
    from conftest import WORDS

    return [" ".join(WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(12 + i % 29)) + " ." for i in range(n)]


def throughput(folder: Path, n: int, batch_size: int, repeats: int) -> dict:
    from ptmech.adapter import load_model
    from ptmech.cache import extract
    from ptmech.residual import left_pad

    adapter = load_model("bench", {"path": str(folder), "device": "cpu", "dtype": "float32"})
    texts = prompts(n)
    ids = adapter.encode(texts)
    order = sorted(range(n), key=lambda i: -len(ids[i]))
    batches = [left_pad([ids[i] for i in order[s:s + batch_size]], adapter.tokenizer.pad_token_id)
               for s in range(0, n, batch_size)]
    n_tokens = sum(len(x) for x in ids)

    def bare():
        with torch.inference_mode():
            for input_ids, mask, pos in batches:
                adapter.model(input_ids=input_ids, attention_mask=mask, position_ids=pos, use_cache=False)

    def extraction():
        with tempfile.TemporaryDirectory() as d:
            extract(adapter, texts, Path(d) / "x.h5", positions=[-1], batch_size=batch_size, log=lambda s: None)

    result = {}
    for name, fn in [("bare_forward", bare), ("extraction", extraction)]:
        fn()  # warm-up
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        best = min(times)
        result[name] = {"seconds": best, "prompts_per_s": n / best, "tokens_per_s": n_tokens / best}
    result["extraction_over_bare_throughput"] = result["bare_forward"]["seconds"] / result["extraction"]["seconds"]
    result.update(prompts=n, tokens=n_tokens, batch_size=batch_size, threads=torch.get_num_threads())
    return result


def peak_rss_child(folder: str, n: int, batch_size: int) -> None:
    from ptmech.adapter import load_model
    from ptmech.cache import extract

    adapter = load_model("bench", {"path": folder, "device": "cpu", "dtype": "float32"})
    with tempfile.TemporaryDirectory() as d:
        extract(adapter, prompts(n), Path(d) / "x.h5", positions=[-1], batch_size=batch_size, log=lambda s: None)
    print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def peak_rss(folder: Path, n: int, batch_size: int) -> float:
    out = subprocess.run([sys.executable, __file__, "--child", str(folder), str(n), str(batch_size)],
                         capture_output=True, text=True, check=True, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_rss_mb"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=1000)
    ap.add_argument("--big", type=int, default=8000)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--model-dir", default=str(HERE / "results" / "gpt2-small-random"))
    ap.add_argument("--out", default=str(HERE / "results" / "extraction.json"))
    args = ap.parse_args()
    folder = build_model(Path(args.model_dir))
    result = {"model": "GPT-2 small config, random weights (124M parameters), float32, CPU",
              "throughput": throughput(folder, args.prompts, args.batch_size, args.repeats),
              "peak_rss_mb": {str(n): peak_rss(folder, n, args.batch_size) for n in (args.prompts, args.big)}}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        peak_rss_child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        main()
