"""Benchmark: the automatic refusal-direction search (``ptmech.refusal.directions.search_direction``),
timed per model and scoring, with what it chose.

Models:

* ``organism``: the trio of a finished default run (``--results``, default ``results/``):
  its models, refusal candidates and instruction datasets, with the config's defaults
  (16 candidates, 32 validation prompts a side);
* ``random-135m``: an untrained Llama shaped like SmolLM2-135M (30 blocks, d_model 576)
  with the organism's tokenizer, chat template and vocabulary (634 tokens, so that every
  token it generates is one the tokenizer can decode), 84 random candidate
  cells (k = 0..20, positions -4..-1) and 26 validation prompts a side, as in the
  real-model run that took 40 minutes (speed does not depend on the weights; its choice
  means nothing).

* ``run``: the models ``--run-models NAME:ROLE ...`` of a finished run of any config
  (``--results``), with their refusal candidates and the run's instruction tables, ``--n-val``
  validation prompts a side (e.g. SmolLM2-135M-Instruct converted from its GGUF file by a run
  of ``configs/real-small.yaml`` up to ``results/refusal/<model>/candidates.npz``);

* ``trio``: each trio kept by ``benchmarks/organism_seeds.py --keep KEEP`` (``--trios
  KEEP/seed0 ...``): the SFT and instruct models' own search as the organism check runs it
  (``organism.checks.own_direction_refusal``: extraction, candidates, search, then greedy
  generation on the test prompts), so each scoring's choice is judged by the refusal rates
  of generations on held-out prompts (the time includes the extraction).

``--score`` picks the scorings (``logit``: batched log-odds and generation for the chosen
direction only; ``generation``, the default: every candidate generated from), ``--prune``
whether all scores are computed (``off``) or only those the choice needs (``on``). ``--ptmech
PATH`` runs another checkout's library instead (e.g. a ``git worktree`` of an older commit,
to time the code before a change side by side; its ``search_direction`` must take the same
arguments). Appends one JSON line per (model, scoring) to ``--out`` with the time, the
chosen cell, the validation refusal rates of the chosen direction and, with generation,
every candidate's scores:

    python benchmarks/refusal_selection.py --models organism random-135m --score logit generation \\
        [--threads 2] [--ptmech OTHER/workflow_scripts] [--label after]
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

SMOLLM2_135M = dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                    num_key_value_heads=3, vocab_size=49152, tie_word_embeddings=True, max_position_embeddings=2048)


def directions():
    """``ptmech.refusal.directions``, or ``ptmech.refusal`` in a checkout from before the
    refusal package (e.g. 057c751, the code when issue 18 was filed, for ``--ptmech``)."""
    try:
        from ptmech.refusal import directions as rf
    except ImportError:
        from ptmech import refusal as rf
    return rf


def settings() -> dict:
    from ptmech.config import schema_defaults

    return schema_defaults(str(REPO / "config.schema.yaml"), "refusal")


def run_models(results: Path, roles: dict[str, str], n_val: int | None = None):
    """(name, adapter, candidates, harmful table, harmless table, n_val, cells) per model of a
    finished run (``results/models/<name>``, its refusal candidates, the run's instruction
    tables)."""
    from ptmech import data
    from ptmech.adapter import load_model
    rf = directions()

    for name, role in roles.items():
        adapter = load_model(name, {"path": str(results / "models" / name), "role": role, "dtype": "float32",
                                    "device": "cpu"})
        yield (name, adapter, rf.Candidates.load(results / "refusal" / name / "candidates.npz"),
               data.load_table(results / "data" / "harmful.tsv"), data.load_table(results / "data" / "harmless.tsv"),
               n_val, "auto")


def organism_models(results: Path):
    return run_models(results, {"organism-base": "base", "organism-sft": "sft", "organism-instruct": "instruct"})


def random_model(results: Path):
    import numpy as np
    import torch
    import transformers

    from ptmech import data
    from ptmech.adapter import ModelAdapter, prepare_tokenizer
    rf = directions()

    torch.manual_seed(0)
    tok = transformers.AutoTokenizer.from_pretrained(results / "models" / "organism-instruct")
    prepare_tokenizer(tok)
    cfg = transformers.LlamaConfig(**{**SMOLLM2_135M, "vocab_size": len(tok)}, pad_token_id=tok.pad_token_id,
                                   bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    model = transformers.LlamaForCausalLM(cfg).eval().requires_grad_(False)
    adapter = ModelAdapter(model, tok, name="random-135m", role="instruct")
    ks, positions = list(range(21)), [-4, -3, -2, -1]
    diffs = np.random.default_rng(0).normal(size=(len(ks), len(positions), cfg.hidden_size)).astype(np.float32)
    yield ("random-135m", adapter, rf.Candidates(diffs, ks, positions),
           data.load_table(results / "data" / "harmful.tsv"), data.load_table(results / "data" / "harmless.tsv"),
           26, ks)


def run(name, adapter, candidates, harmful, harmless, n_val, layers, score: str, prune: bool = False,
        layer_stride: int | None = None) -> dict:
    rf = directions()

    s = settings()
    n_val = n_val or s["n_val"]
    ids = {key: rf.split_prompts(adapter, table, "val", n_val, s["split_fractions"], s["split_seed"])[1]
           for key, table in (("harmful", harmful), ("harmless", harmless))}
    tokens = rf.refusal_token_ids(adapter.tokenizer, s["refusal_tokens"])
    selection = {**s["selection"], "score": score, "layers": layers, "prune": prune}
    if layer_stride:
        selection["layer_stride"] = layer_stride
    addition = {k: v for k, v in s["addition"].items() if k != "sweep"}
    start = time.perf_counter()
    frame, rule = rf.search_direction(adapter, candidates, ids["harmful"], ids["harmless"], selection=selection,
                                      addition=addition, refusal_tokens=tokens, prefixes=s["prefixes"],
                                      batch_size=s["batch_size"])
    seconds = time.perf_counter() - start
    chosen = frame[frame["selected"]].iloc[0]
    return {
        "model": name, "score": score, "prune": prune, "seconds": round(seconds, 2), "n_candidates": len(frame),
        "n_val": {key: len(x) for key, x in ids.items()}, "prompt_tokens": sum(len(x) for x in ids["harmful"] + ids["harmless"]),
        "chosen": {"k": int(chosen["k"]), "position": int(chosen["position"])}, "rule": rule,
        "chosen_scores": {c: float(chosen[c]) for c in ("ablation_refusal_score", "addition_refusal_score", "ablation_kl",
                                                        "ablation_refusal_rate", "addition_refusal_rate")},
        "baseline": {key: float(v) for key, v in frame.attrs.items()},
        "candidates": frame.drop(columns=["discarded"]).to_dict("records") if score == "generation" else None,
    }


def trio_rows(folder: Path, score: str) -> list[dict]:
    """The search of each post-trained model of a kept trio with ``score``, judged on the
    test prompts: the chosen cell, the rule, and the refusal rates of its ablation
    (harmful) and addition (harmless) against the baseline."""
    import tempfile

    from ptmech.adapter import load_model
    from ptmech.organism import checks
    from ptmech.organism.world import World, instruction_datasets

    s = settings()
    s["selection"] = {**s["selection"], "score": score}
    instructions = instruction_datasets(World.from_json(folder / "world.json"))
    rows = []
    for name, role in (("organism-sft", "sft"), ("organism-instruct", "instruct")):
        adapter = load_model(name, {"path": str(folder / name), "role": role, "dtype": "float32", "device": "cpu"})
        with tempfile.TemporaryDirectory() as work:
            start = time.perf_counter()
            result = checks.own_direction_refusal(adapter, instructions, work, s)
            seconds = time.perf_counter() - start
        rows.append({"model": f"{folder.name}/{name}", "score": score, "seconds": round(seconds, 2),
                     "n_candidates": len(result["selection"]),
                     "chosen": {"k": result["k"], "position": result["position"]}, "rule": result["rule"],
                     "test_rates": result["rates"]})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["organism", "random-135m"],
                        choices=["organism", "random-135m", "run", "trio"])
    parser.add_argument("--run-models", nargs="+", default=[], help="NAME:ROLE of each model of --models run")
    parser.add_argument("--n-val", type=int, default=None, help="validation prompts a side for --models run")
    parser.add_argument("--layer-stride", type=int, default=None,
                        help="refusal.selection.layer_stride (default: the schema's, 1; configs/real-small.yaml has 2)")
    parser.add_argument("--trios", nargs="+", default=[], help="trio folders kept by organism_seeds.py --keep")
    parser.add_argument("--score", nargs="+", default=["logit", "generation"], choices=["logit", "generation"])
    parser.add_argument("--prune", nargs="+", default=["off"], choices=["off", "on"],
                        help="refusal.selection.prune: only the scores the choice needs")
    parser.add_argument("--results", default=str(REPO / "results"), help="a finished default run's results/")
    parser.add_argument("--ptmech", default=str(REPO / "workflow_scripts"), help="the library's folder to run")
    parser.add_argument("--label", default="", help="recorded with each row (e.g. before / after)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "refusal_selection.jsonl"))
    args = parser.parse_args()
    sys.path.insert(0, args.ptmech)
    import torch
    import transformers

    torch.set_num_threads(args.threads)
    results = Path(args.results)
    if set(args.models) & {"organism", "random-135m"} and not (results / "models" / "organism-instruct").is_dir():
        sys.exit(f"{results}: no trained organism (run the default workflow first, or give --results)")
    env = {"torch": torch.__version__, "transformers": transformers.__version__, "threads": args.threads,
           "cpu_capability": torch.backends.cpu.get_cpu_capability(), "machine": platform.machine(),
           "ptmech": args.ptmech, "label": args.label}
    sources = {"organism": organism_models, "random-135m": random_model,
               "run": lambda r: run_models(r, dict(m.split(":", 1) for m in args.run_models), args.n_val)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    for source in args.models:
        if source == "trio":
            for folder in args.trios:
                for score in args.score:
                    for row in trio_rows(Path(folder), score):
                        print(json.dumps(row), flush=True)
                        with open(args.out, "a") as f:
                            f.write(json.dumps({**row, **env}) + "\n")
            continue
        for model in sources[source](results):
            for score in args.score:
                for prune in args.prune:
                    row = {**run(*model, score, prune == "on", args.layer_stride), **env}
                    print(json.dumps({k: v for k, v in row.items() if k != "candidates"}), flush=True)
                    with open(args.out, "a") as f:
                        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
