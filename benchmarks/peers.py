"""ptmech against its peers on the two jobs that dominate a run: residual-stream extraction
and the knowledge patching grid.

    pip install -e ".[peers]" -c constraints.txt
    python benchmarks/peers.py [--prompts 256] [--repeats 3] [--threads 2]

Model: a randomly initialised GPT-2-small-sized model (124M parameters, GPT-2's vocabulary of
50,257) built from its config class, float32 on the CPU; the same weights in every library
(TransformerLens gets them converted with its own GPT-2 weight conversion, no weight
processing; nnsight wraps a copy, since it instruments the modules it wraps). Prompts all have the same number of tokens, so no library's padding convention
matters and every method sees identical tensors.

* **Extraction**: the residual stream at every block input k = 0..L-1 and after the last
  block (k = L), at the last token, of every prompt, brought to the CPU as numbers. Methods:
  ptmech's ``cache.extract`` (to an HDF5 file, float32); the model's backbone with
  ``output_hidden_states=True``; nnsight ``trace`` with ``.save()`` of every block's input
  and the final norm's input; TransformerLens ``run_with_cache`` filtered to ``resid_pre`` and
  the last ``resid_post``, without the unembedding (``return_type=None``). The floor is the
  backbone's forward without hidden states (no output layer, nothing kept).
* **Patching**: the logit difference of two answer tokens at the last position of a
  "false" prompt with each (block output, position) cell replaced by a "true" prompt's,
  over the last T positions (default 8; the knowledge stage patches a statement's last
  tokens) and every block. Methods: ptmech's batched ``patch_grid``;
  ptmech's one forward pass per cell (``patch_grid_loop``); TransformerLens's
  ``generic_activation_patch`` on ``resid_post``; nnsight, one ``trace`` per cell. Loops are
  timed on a subset of cells and scaled to the grid (each cell is one forward pass of the
  same prompt, so their cost is linear in the cells).

Methods are interleaved: each repeat runs every method once, in an order that rotates, and
the medians are reported. Every method's numbers are checked against ptmech's (max absolute
difference). Writes ``benchmarks/results/peers.json`` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import copy
import importlib.metadata as md
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow_scripts"))
sys.path.insert(0, str(REPO / "tests"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

from ptmech.adapter import ModelAdapter  # noqa: E402
from ptmech.cache import Cache, extract  # noqa: E402
from ptmech.knowledge import patching  # noqa: E402


def gpt2_small(seed: int = 0):
    from conftest import make_tokenizer

    cfg = transformers.GPT2Config(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12)
    torch.manual_seed(seed)
    model = transformers.GPT2LMHeadModel(cfg).eval().requires_grad_(False)
    return model, make_tokenizer()


def fixed_length_prompts(tokenizer, n: int, length: int) -> list[str]:
    """``n`` different prompts of exactly ``length`` tokens (BOS included) with the test
    tokenizer (one token per word)."""
    from conftest import WORDS

    texts = [" ".join(WORDS[(i * 7 + j * 3 + i // len(WORDS)) % len(WORDS)] for j in range(length - 1))
             for i in range(n)]
    lengths = {len(tokenizer(t)["input_ids"]) for t in texts}
    assert lengths == {length}, f"prompts of {lengths} tokens, wanted {length}"
    return texts


def hooked_transformer(hf_model):
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformer_lens.pretrained.weight_conversions.gpt2 import convert_gpt2_weights

    c = hf_model.config
    cfg = HookedTransformerConfig(
        n_layers=c.n_layer, d_model=c.n_embd, d_head=c.n_embd // c.n_head, n_heads=c.n_head, d_mlp=4 * c.n_embd,
        d_vocab=c.vocab_size, n_ctx=c.n_positions, act_fn="gelu_new", normalization_type="LN",
        eps=c.layer_norm_epsilon, positional_embedding_type="standard", original_architecture="GPT2LMHeadModel",
        device="cpu", dtype=torch.float32)
    model = HookedTransformer(cfg)
    model.load_and_process_state_dict(convert_gpt2_weights(hf_model, cfg), fold_ln=False, center_writing_weights=False,
                                      center_unembed=False, fold_value_biases=False, refactor_factored_attn_matrices=False)
    return model.eval()


def interleaved(methods: dict, repeats: int) -> dict[str, list[float]]:
    """Seconds of each method per repeat; repeat r starts at method r (mod the count)."""
    names = list(methods)
    times: dict[str, list[float]] = {n: [] for n in names}
    for n in names:  # warm-up, untimed
        methods[n]()
    for r in range(repeats):
        for n in names[r % len(names):] + names[:r % len(names)]:
            start = time.perf_counter()
            methods[n]()
            times[n].append(time.perf_counter() - start)
    return times


# --- extraction -----------------------------------------------------------------------------
def extraction(hf, tok, lm, tl, n: int, length: int, batch_size: int, repeats: int) -> dict:
    adapter = ModelAdapter(hf, tok, name="gpt2-small-random")
    texts = fixed_length_prompts(tok, n, length)
    ids = torch.tensor(adapter.encode(texts))
    batches = list(torch.split(ids, batch_size))
    L = hf.config.n_layer
    results: dict[str, np.ndarray] = {}
    tmp = tempfile.mkdtemp()

    def floor():
        with torch.inference_mode():
            for b in batches:
                hf.transformer(input_ids=b, use_cache=False)

    def ptmech():
        path = Path(tmp) / "x.h5"
        path.unlink(missing_ok=True)
        extract(adapter, texts, path, positions=[-1], batch_size=batch_size, storage_dtype="float32",
                log=lambda s: None)
        with Cache(path) as c:
            results["ptmech"] = np.stack([c.resid(k)[:, 0] for k in range(L + 1)], 1)

    def hidden_states():
        out = []
        with torch.inference_mode():
            for b in batches:
                hs = hf.transformer(input_ids=b, use_cache=False, output_hidden_states=True).hidden_states
                # hidden_states[L] is after the final norm; the residual stream at k = L is its input
                out.append(torch.stack([h[:, -1] for h in hs[:L]], 1).numpy())
        results["output_hidden_states"] = np.concatenate(out)

    def nnsight_trace():
        out = []
        for b in batches:
            saved = []  # filled inside the trace (a comprehension there would not be seen outside)
            with torch.inference_mode(), lm.trace(b):
                for i in range(L):
                    saved.append(lm.transformer.h[i].input[:, -1].save())
                saved.append(lm.transformer.ln_f.input[:, -1].save())
            out.append(torch.stack([torch.as_tensor(s) for s in saved], 1).numpy())
        results["nnsight"] = np.concatenate(out)

    names = [f"blocks.{i}.hook_resid_pre" for i in range(L)] + [f"blocks.{L - 1}.hook_resid_post"]

    def transformer_lens():
        out = []
        with torch.inference_mode():
            for b in batches:
                _, cache = tl.run_with_cache(b, return_type=None, names_filter=lambda name: name in names)
                out.append(torch.stack([cache[name][:, -1] for name in names], 1).numpy())
        results["transformer_lens"] = np.concatenate(out)

    methods = {"floor (backbone forward)": floor, "ptmech": ptmech, "output_hidden_states": hidden_states,
               "nnsight": nnsight_trace, "transformer_lens": transformer_lens}
    times = interleaved(methods, repeats)
    ref = results["ptmech"]
    rows = []
    floor_s = statistics.median(times["floor (backbone forward)"])
    for name, t in times.items():
        med = statistics.median(t)
        got = results.get(name)
        k = got.shape[1] if got is not None else 0  # output_hidden_states: k = 0..L-1
        rows.append({"method": name, "seconds_median": med, "seconds": t, "prompts_per_s": n / med,
                     "time_over_floor": med / floor_s, "ptmech_speedup": med / statistics.median(times["ptmech"]),
                     "max_abs_diff_vs_ptmech": None if got is None else float(np.abs(got - ref[:, :k]).max()),
                     "k_compared": None if got is None else f"0..{k - 1}"})
    return {"prompts": n, "tokens_per_prompt": length, "tokens": n * length, "batch_size": batch_size,
            "repeats": repeats, "methods": rows}


# --- patching -------------------------------------------------------------------------------
def patching_grid(hf, tok, lm, tl, length: int, T: int, loop_positions: int, repeats: int) -> dict:
    adapter = ModelAdapter(hf, tok, name="gpt2-small-random")
    true_text, false_text = fixed_length_prompts(tok, 2, length)
    true_ids, false_ids = adapter.encode([true_text])[0], adapter.encode([false_text])[0]
    answers = (int(tok.convert_tokens_to_ids("TRUE")), int(tok.convert_tokens_to_ids("FALSE")))
    L, S = hf.config.n_layer, length
    (_, acts, _), = patching.true_runs(adapter, [true_ids], T)
    source = acts[0].float()  # [L, T, d] block outputs of the true run at positions -T..-1
    cells = [(j, l) for j in range(T - loop_positions, T) for l in range(L)]
    results: dict[str, np.ndarray] = {}
    false_t = torch.tensor([false_ids])
    true_t = torch.tensor([true_ids])

    def ptmech_grid():
        results["ptmech patch_grid"] = patching.patch_grid(adapter, false_ids, source, answers).numpy()

    def ptmech_loop():
        results["ptmech per-cell loop"] = patching.patch_grid_loop(
            adapter, false_ids, source[:, T - loop_positions:], answers).numpy()

    _, tl_clean = tl.run_with_cache(true_t, names_filter=lambda name: name.endswith("hook_resid_post"))

    def transformer_lens():
        import pandas as pd
        from transformer_lens.patching import generic_activation_patch, layer_pos_patch_setter

        index = pd.DataFrame([(l, S - T + j) for j, l in cells], columns=["layer", "pos"])
        out = generic_activation_patch(
            tl, false_t, tl_clean, lambda logits: logits[0, -1, answers[0]] - logits[0, -1, answers[1]],
            layer_pos_patch_setter, "resid_post", index_df=index)
        grid = np.empty((loop_positions, L), dtype=np.float32)
        for (j, l), v in zip(cells, out.tolist()):
            grid[j - (T - loop_positions), l] = v
        results["transformer_lens generic_activation_patch"] = grid

    def nnsight_loop():
        grid = np.empty((loop_positions, L), dtype=np.float32)
        for j, l in cells:
            with torch.inference_mode(), lm.trace(false_t):
                out = lm.transformer.h[l].output
                hidden = out[0] if isinstance(out, tuple) else out
                hidden[:, S - T + j] = source[l, j]
                logits = lm.lm_head.output
                ld = (logits[0, -1, answers[0]] - logits[0, -1, answers[1]]).save()
            grid[j - (T - loop_positions), l] = float(torch.as_tensor(ld))
        results["nnsight per-cell trace"] = grid

    methods = {"ptmech patch_grid": ptmech_grid, "ptmech per-cell loop": ptmech_loop,
               "transformer_lens generic_activation_patch": transformer_lens, "nnsight per-cell trace": nnsight_loop}
    times = interleaved(methods, repeats)
    scale = {name: 1.0 if name == "ptmech patch_grid" else T * L / len(cells) for name in methods}
    per_pair = {name: statistics.median(t) * scale[name] for name, t in times.items()}
    ref = results["ptmech patch_grid"][T - loop_positions:]
    rows = [{"method": name, "seconds_per_pair": s, "seconds": times[name], "cells_timed": T * L if scale[name] == 1
             else len(cells), "patch_grid_speedup": s / per_pair["ptmech patch_grid"],
             "max_abs_diff_vs_patch_grid": float(np.abs(results[name][-loop_positions:] - ref).max())}
            for name, s in per_pair.items()]
    return {"prompt_tokens": S, "positions": T, "blocks": L, "cells_per_pair": T * L, "repeats": repeats,
            "methods": rows}


def markdown(result: dict) -> str:
    ex, pa = result["extraction"], result["patching"]
    lines = [f"Extraction: {ex['prompts']} prompts of {ex['tokens_per_prompt']} tokens, batch {ex['batch_size']}, "
             f"every k at the last token; medians of {ex['repeats']} interleaved repeats.", "",
             "| method | s | prompts/s | time / floor | time / ptmech | max abs diff vs ptmech |", "|---|---|---|---|---|---|"]
    for r in ex["methods"]:
        diff = "" if r["max_abs_diff_vs_ptmech"] is None else f"{r['max_abs_diff_vs_ptmech']:.1e} (k {r['k_compared']})"
        lines.append(f"| {r['method']} | {r['seconds_median']:.2f} | {r['prompts_per_s']:.0f} | "
                     f"{r['time_over_floor']:.2f} | {r['ptmech_speedup']:.2f}x | {diff} |")
    lines += ["", f"Patching: one pair, {pa['positions']} positions x {pa['blocks']} blocks = {pa['cells_per_pair']} "
              f"cells, prompts of {pa['prompt_tokens']} tokens; medians of {pa['repeats']} interleaved repeats.", "",
              "| method | s per pair | patch_grid faster by | max abs diff vs patch_grid |", "|---|---|---|---|"]
    for r in pa["methods"]:
        lines.append(f"| {r['method']} | {r['seconds_per_pair']:.2f} | {r['patch_grid_speedup']:.1f}x | "
                     f"{r['max_abs_diff_vs_patch_grid']:.1e} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=256)
    ap.add_argument("--tokens", type=int, default=28, help="tokens per prompt (BOS included)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--positions", type=int, default=8,
                    help="patched positions T, the last T tokens (the knowledge stage patches a statement's last "
                         "tokens: 6 of 25 on the default run)")
    ap.add_argument("--loop-positions", type=int, default=2, help="positions of the per-cell loops that are timed")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--parts", nargs="+", choices=("extraction", "patching"), default=["extraction", "patching"],
                    help="run only these (the others are kept from an earlier --out file)")
    ap.add_argument("--out", default=str(REPO / "benchmarks/results/peers.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    from nnsight import LanguageModel

    hf, tok = gpt2_small()
    # nnsight instruments the modules it wraps (every call goes through its controller): its
    # own copy, so ptmech and the others run the plain model
    lm = LanguageModel(copy.deepcopy(hf), tokenizer=tok)
    tl = hooked_transformer(hf)
    out = Path(args.out)
    result = json.loads(out.read_text()) if out.exists() and len(args.parts) < 2 else {}
    result.update({
        "model": "GPT-2 small config, random weights (124M parameters, vocabulary 50,257), float32, CPU",
        "versions": {p: md.version(p) for p in ("torch", "transformers", "nnsight", "transformer-lens", "h5py")},
        "threads": args.threads, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "machine": platform.machine(), "cpu_count": os.cpu_count(),
    })
    if "extraction" in args.parts:
        result["extraction"] = extraction(hf, tok, lm, tl, args.prompts, args.tokens, args.batch_size, args.repeats)
    if "patching" in args.parts:
        result["patching"] = patching_grid(hf, tok, lm, tl, args.tokens, args.positions, args.loop_positions,
                                           args.repeats)
    result["markdown"] = markdown(result)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(result["markdown"])
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
