"""Behavioural checks of a trained organism model: does it know the facts, can it label
held-out statements TRUE / FALSE from a few-shot prompt, and does it refuse harmful (and
only harmful) requests? One tidy row per metric: ``metric, value, n``.

The checks go through the same code the analyses use (the model adapter, its
instruction template, batched last-token logits, greedy generation, the paper's
few-shot query and refusal prefixes), so a passing organism is one the analyses can read.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..adapter import ModelAdapter
from ..fewshot import SUFFIX, answer_token_ids, query
from ..forward import last_logits
from ..generation import greedy
from ..refusal.directions import is_refusal
from .world import LANGUAGE, STATEMENT_DATASETS, World

log = logging.getLogger(__name__)

ROLES = {"organism-base": "base", "organism-sft": "sft", "organism-instruct": "instruct"}


def adapter_for(model, tokenizer, name: str) -> ModelAdapter:
    """Wrap a model as the analyses see it; ``name`` (``organism-base`` ...) gives the role,
    hence the instruction template (the plain base template for the base model, the chat
    template for the others)."""
    if name not in ROLES:
        raise ValueError(f"unknown organism model {name!r}; expected one of {', '.join(ROLES)}")
    tokenizer.padding_side = "left"
    return ModelAdapter(model.eval(), tokenizer, name=name, role=ROLES[name])


def single_token_id(tokenizer, text: str) -> int:
    ids = tokenizer(text, add_special_tokens=False).input_ids
    if len(ids) != 1:
        raise ValueError(f"{text!r} is {len(ids)} tokens for this tokenizer, expected 1")
    return ids[0]


def fact_recall(adapter: ModelAdapter, world: World) -> dict[str, tuple[float, int]]:
    """Top-1 accuracy of the object after ``"The city of X is in"`` and ``"The Velish word
    'w' means '"``, over every city and word (held-out ones included: their facts are in
    the pretraining text). Returns name -> (accuracy, n)."""
    cases = {
        "cities": [(f"The city of {c} is in", y) for c, y in world.cities.items()],
        "trans": [(f"The {LANGUAGE} word '{w}' means '", e) for w, e in world.words.items()],
    }
    out = {}
    for name, pairs in cases.items():
        prompts, answers = zip(*pairs)
        pred = last_logits(adapter, list(prompts)).argmax(-1)
        target = torch.tensor([single_token_id(adapter.tokenizer, " " + a) for a in answers])
        out[name] = (float((pred == target).float().mean()), len(pairs))
    return out


def few_shot_prompts(statements: list[str], demos: list[str]) -> list[str]:
    """The paper's query (METHODS.md 4.5): the 4 demos, shuffled with ``random.seed(1 + i)``
    for statement i, one per line, then the statement and ``" This statement is:"``."""
    parsed = []
    for d in demos:
        statement, answer = d.rsplit(SUFFIX, 1)
        parsed.append((statement, int(answer.strip() == "TRUE")))
    prompts = []
    for i, s in enumerate(statements):
        order = list(parsed)
        random.Random(1 + i).shuffle(order)
        prompts.append(query(order, s))
    return prompts


def few_shot_accuracy(adapter: ModelAdapter, table: pd.DataFrame, demos: list[str]) -> tuple[float, int]:
    """Fraction of ``table``'s statements whose logit of " TRUE" vs " FALSE" after the
    few-shot prompt matches ``label`` (statements that are demos are skipped)."""
    rows = table[~table["statement"].isin([d.rsplit(SUFFIX, 1)[0] for d in demos])]
    if rows.empty:
        return float("nan"), 0
    logits = last_logits(adapter, few_shot_prompts(list(rows["statement"]), demos), batch_size=64)
    t, f = answer_token_ids(adapter.tokenizer)
    pred = (logits[:, t] > logits[:, f]).long()
    return float((pred == torch.tensor(rows["label"].to_numpy())).float().mean()), len(rows)


def refusal_rates(adapter: ModelAdapter, instructions: dict[str, pd.DataFrame], split: str = "test",
                  max_new_tokens: int = 8) -> dict[str, tuple[float, int, list[str]]]:
    """Refusal rate (the paper's prefix test on greedy generations) on the ``split`` rows of
    each instruction set, in the adapter's instruction template. Returns
    name -> (rate, n, generations)."""
    out = {}
    for name, table in instructions.items():
        xs = list(table.loc[table["split"] == split, "instruction"])
        ids = adapter.encode([adapter.render_instruction(x) for x in xs])
        gens = greedy(adapter, ids, max_new_tokens=max_new_tokens, batch_size=64).texts(adapter.tokenizer)
        out[name] = (sum(map(is_refusal, gens)) / max(1, len(gens)), len(gens), gens)
    return out


def behaviour_table(adapter: ModelAdapter, world: World, statements: dict[str, pd.DataFrame],
                    instructions: dict[str, pd.DataFrame], few_shot: list[dict],
                    max_new_tokens: int = 8) -> pd.DataFrame:
    """All checks of one model as tidy rows ``metric, value, n``:

    * ``fact_recall`` (cities and words pooled) and ``fact_recall_{cities,trans}``;
    * ``fewshot_acc_heldout`` (all held-out statements pooled), ``fewshot_acc_heldout_{set}``
      per statement set, and ``fewshot_acc_labelled`` (statements labelled in pretraining);
    * ``refusal_rate_harmful`` / ``refusal_rate_harmless`` on the test split.
    """
    rows = []
    recall = fact_recall(adapter, world)
    total = sum(n for _, n in recall.values())
    rows.append(("fact_recall", sum(v * n for v, n in recall.values()) / total, total))
    rows += [(f"fact_recall_{k}", v, n) for k, (v, n) in recall.items()]

    demos = {d["dataset_name"]: d["few_shot_examples"] for d in few_shot}
    for held, suffix in ((1, "heldout"), (0, "labelled")):
        per = {}
        for name in STATEMENT_DATASETS:
            table = statements[name]
            per[name] = few_shot_accuracy(adapter, table[table["heldout"] == held], demos[name])
        n = sum(k for _, k in per.values())
        rows.append((f"fewshot_acc_{suffix}", sum(v * k for v, k in per.values() if k) / max(1, n), n))
        if held:
            rows += [(f"fewshot_acc_heldout_{name}", v, k) for name, (v, k) in per.items()]

    for name, (rate, n, gens) in refusal_rates(adapter, instructions, max_new_tokens=max_new_tokens).items():
        rows.append((f"refusal_rate_{name}", rate, n))
        for g in gens[:3]:
            log.info("%s: %s -> %r", adapter.name, name, g)
    return pd.DataFrame(rows, columns=["metric", "value", "n"])


def probe_sweep(adapter: ModelAdapter, tables: dict[str, pd.DataFrame], root: str | Path, kinds=("mm",)):
    """Leave-one-dataset-out probes on ``adapter``'s last-token residuals of the statement
    ``tables`` (name -> DataFrame with statement, label; cached under ``root``), as the
    truth stage fits them. Returns (accuracy table, probes, chosen layers); the chosen
    layers' ``probe_accuracy`` is the best residual index's mean held-out accuracy."""
    from ..truth import probes as truth
    from ..cache import extract

    paths = {}
    for ds, table in tables.items():
        paths[ds] = Path(root) / f"{ds}.h5"
        extract(adapter, list(table["statement"]), paths[ds], positions=[-1], storage_dtype="float32",
                labels={"label": table["label"].to_numpy()}, attrs={"dataset": ds}, log=lambda s: None)
    acc, probes = truth.sweep_caches(paths, list(tables), model=adapter.name, kinds=list(kinds))
    return acc, probes, truth.choose_layers(acc, probes.n_layers)


def own_direction_refusal(adapter: ModelAdapter, tables: dict[str, pd.DataFrame], root: str | Path,
                          settings: dict) -> dict:
    """A post-trained model's refusal direction, chosen by the refusal stage's automatic
    search with the refusal ``settings`` (the config's ``refusal:`` section with its
    defaults), and its refusal rates on the test prompts: ``baseline`` (harmful),
    ``baseline_harmless``, own direction ``ablation`` (harmful) and ``addition`` (harmless).
    ``tables``: ``harmful`` / ``harmless`` instruction tables (instruction, split).
    Returns ``{"rule", "k", "position", "rates", "selection"}``; ``rule`` starts with
    "lowest" when the direction passed every filter; ``selection`` is the search's table of
    every candidate's scores."""
    from .. import prompts
    from ..refusal import directions as rf
    from ..cache import extract

    s, root = settings, Path(root)
    caches = {}
    positions = prompts.positions(adapter, "post_instruction")
    for name in ("harmful", "harmless"):
        caches[name] = root / f"{name}.h5"
        extract(adapter, prompts.render(adapter, tables[name], {"kind": "instructions"}), caches[name],
                positions=positions, rows=np.arange(len(tables[name])), log=lambda x: None)
    candidates, _ = rf.candidates_from_caches(caches["harmful"], caches["harmless"], tables["harmful"],
                                              tables["harmless"], split_fractions=s["split_fractions"],
                                              split_seed=s["split_seed"], n_train=s["n_train"])

    def ids(name, split, n):
        return rf.split_prompts(adapter, tables[name], split, n, s["split_fractions"], s["split_seed"])[1]

    tokens = rf.refusal_token_ids(adapter.tokenizer, s["refusal_tokens"])
    frame, rule = rf.search_direction(adapter, candidates, ids("harmful", "val", s["n_val"]),
                                      ids("harmless", "val", s["n_val"]), selection=s["selection"],
                                      addition=s["addition"], refusal_tokens=tokens, prefixes=s["prefixes"])
    add = s["addition"]
    chosen = frame[frame["selected"]].iloc[0]
    k, position = int(chosen["k"]), int(chosen["position"])
    diff = candidates.direction(k, position)
    r = rf.unit(diff)
    conditions = {
        "baseline": ("harmful", rf.Intervention("none")),
        "baseline_harmless": ("harmless", rf.Intervention("none")),
        "ablation": ("harmful", rf.Intervention("ablation", r)),
        "addition": ("harmless", rf.Intervention("addition", r, k=k, coefficient=add["coefficient"],
                                                 scale=float(np.linalg.norm(diff)), sites=tuple(add["sites"]))),
    }
    rates = {}
    for cond, (name, iv) in conditions.items():
        out = rf.steer(adapter, ids(name, "test", s["n_test"]), iv, refusal_tokens=tokens, prefixes=s["prefixes"],
                       max_new_tokens=s["generation"]["max_new_tokens"])
        rates[cond] = float(out["refused"].mean())
    log.info("%s refusal: k=%d, position %d (%s); %s", adapter.name, k, position, rule, rates)
    return {"rule": rule, "k": k, "position": position, "rates": rates, "selection": frame}


def trio_metrics(root: str | Path, world: World, refusal_settings: dict, work: str | Path) -> dict[str, dict]:
    """Every floor metric (``floors``) of the trio saved under ``root`` (``organism-base/``,
    ``organism-sft/``, ``organism-instruct/``): behaviour checks of each model, the base
    model's best-layer MMProbe and the instruct model's own refusal direction. ``work``
    holds the activation files this needs. Returns model -> metric -> value."""
    from ..adapter import load_model
    from . import floors
    from .world import instruction_datasets, few_shot_samples, statement_datasets

    statements, instructions = statement_datasets(world), instruction_datasets(world)
    out = {}
    for name, role in ROLES.items():
        adapter = load_model(name, {"path": str(Path(root) / name), "role": role, "dtype": "float32",
                                    "device": "cpu"})
        table = behaviour_table(adapter, world, statements, instructions, few_shot_samples(statements))
        out[name] = floors.behaviour_metrics(table)
        folder = Path(work) / name
        folder.mkdir(parents=True, exist_ok=True)
        if role == "base":
            _, _, layers = probe_sweep(adapter, {d: statements[d] for d in STATEMENT_DATASETS}, folder)
            out[name]["probe_accuracy"] = float(layers["probe_accuracy"])
            out[name]["probe_k"] = float(layers["probe_k"])
        if role == "instruct":
            result = own_direction_refusal(adapter, instructions, folder, refusal_settings)
            r = result["rates"]
            out[name].update(floors.refusal_metrics(floors.passed_filters(result["rule"]), r["baseline"],
                                                    r["ablation"], r["addition"]))
            frame = result["selection"]
            chosen = frame[frame["selected"]].iloc[0]
            # diagnostics: where the chosen direction sits and how it did on the val prompts
            out[name].update({"refusal_k": float(result["k"]), "refusal_position": float(result["position"]),
                              "val_ablation_rate": float(chosen["ablation_refusal_rate"]),
                              "val_addition_rate": float(chosen["addition_refusal_rate"]),
                              "val_ablation_kl": float(chosen["ablation_kl"])})
    return out
