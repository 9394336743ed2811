"""Training the organism trio: a tiny ``LlamaForCausalLM`` pretrained on the world's text
(base), fine-tuned on chats (SFT), then tuned further with more varied refusal data and a
preference (DPO) loss against the frozen SFT model (instruct).

Every stage runs a fixed number of steps from a fixed seed: ``torch.manual_seed`` fixes
the initial weights, a ``random.Random`` fixes the data stream, so the same seed and thread
count give bit-identical weights on the same machine. Nothing depends on wall time.

Batches are sequences packed into rows (``pack_batch``) with ``labels = -100`` wherever no
loss is taken (padding; prompts of chats); the logits are those of each sequence alone.
"""

from __future__ import annotations

import copy
import logging
import random
import time
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase

from .corpus import ChatCorpus, PretrainCorpus
from .world import World

log = logging.getLogger(__name__)

IGNORE = -100
# pretraining packs its documents into rows of at least 128 tokens: fact documents are 50-90
# tokens long, and rows of the longest document would hold little else. (Rows of 96 train
# about 7% faster, but the base model they gave is one whose instruct model's refusal
# direction fails the KL filter; see the post-training note in recipe.py.)
PRETRAIN_ROW = 128
# the attention used while training: for 16-dimensional heads on a CPU, plain matmuls
# (eager) are a little faster than scaled_dot_product_attention (pretraining 5.4 against
# 5.2 steps a second on 2 cores); the saved models keep transformers' default
TRAIN_ATTENTION = "eager"

DEFAULT_MODEL = {"hidden_size": 64, "num_hidden_layers": 4, "num_attention_heads": 4,
                 "intermediate_size": 256, "max_position_embeddings": 256, "initializer_range": 0.08,
                 "tie_word_embeddings": False}


def set_determinism(seed: int, threads: int) -> None:
    """Seed python and torch and fix the thread count (results are bit-identical only for
    the same seed, thread count and machine)."""
    random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(max(1, int(threads)))


def init_model(tokenizer: PreTrainedTokenizerBase, model_cfg: dict, seed: int) -> LlamaForCausalLM:
    """A freshly initialised Llama sized by ``model_cfg`` (``hidden_size``,
    ``num_hidden_layers``, ``num_attention_heads``, ``intermediate_size``,
    ``max_position_embeddings``), with the tokenizer's vocabulary and special ids."""
    cfg = LlamaConfig(
        vocab_size=len(tokenizer), **{**DEFAULT_MODEL, **model_cfg},
        num_key_value_heads=model_cfg.get("num_attention_heads", DEFAULT_MODEL["num_attention_heads"]),
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, rms_norm_eps=1e-5,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model


def n_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ------------------------------------------------------------------------------ batches

def pack_batch(seqs: list[list[int]], labels: list[list[int]], pad_id: int,
               capacity: int = 0) -> dict[str, torch.Tensor]:
    """Pack sequences into ``[rows, T]`` tensors without padding them to one another.

    Sequences go into rows of ``max(capacity, longest sequence)`` tokens, longest first,
    each into the first row with room (first-fit decreasing); the rest of a row is padding.
    ``position_ids`` restart at 0 at every sequence, which transformers reads as packed
    sequences (with ``attention_mask=None`` and no cache): attention never crosses from one
    sequence to another, so every logit is that of the sequence run alone. A sequence's
    first token is never a target, as in a right-padded batch.

    Returns ``input_ids``, ``position_ids``, ``labels`` (``IGNORE`` where no loss is taken)
    and ``seq`` (the index into ``seqs`` of each token, -1 on padding)."""
    cap = max([capacity] + [len(s) for s in seqs])
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(seqs)), key=lambda i: -len(seqs[i])):
        n = len(seqs[i])
        r = next((r for r, left in enumerate(room) if left >= n), None)
        if r is None:
            rows.append([])
            room.append(cap)
            r = len(rows) - 1
        rows[r].append(i)
        room[r] -= n
    T = cap - min(room)
    ids, lab, pos, seq = [], [], [], []
    for row in rows:
        r_ids, r_lab, r_pos, r_seq = [], [], [], []
        for i in row:
            n = len(seqs[i])
            r_ids += seqs[i]
            r_lab += [IGNORE] + list(labels[i][1:n]) + [IGNORE] * (n - max(1, len(labels[i])))
            r_pos += range(n)
            r_seq += [i] * n
        pad = T - len(r_ids)  # the padding is a sequence of its own
        ids.append(r_ids + [pad_id] * pad)
        lab.append(r_lab + [IGNORE] * pad)
        pos.append(r_pos + list(range(pad)))
        seq.append(r_seq + [-1] * pad)
    ids, lab, pos, seq = (torch.tensor(x, dtype=torch.long) for x in (ids, lab, pos, seq))
    return {"input_ids": ids, "position_ids": pos, "labels": lab, "seq": seq}


class Encoder:
    """Token ids of documents and chats, with the tokenizer's BOS / EOS and its chat
    template (rendered prompts are cached: the same prompts come back often)."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, max_len: int):
        self.tok = tokenizer
        self.max_len = max_len
        self.eos = tokenizer.eos_token_id
        self.prompt_ids = lru_cache(maxsize=None)(self._prompt_ids)

    def documents(self, docs: list[str]) -> tuple[list[list[int]], list[list[int]]]:
        """``<s> doc </s>`` with the loss on every token."""
        seqs = [ids[: self.max_len - 1] + [self.eos] for ids in self.tok(docs).input_ids]
        return seqs, seqs

    def _prompt_ids(self, user: str) -> tuple[int, ...]:
        text = self.tok.apply_chat_template([{"role": "user", "content": user}], add_generation_prompt=True,
                                            tokenize=False)
        return tuple(self.tok(text).input_ids)

    def chats(self, pairs: list[tuple[str, str]]) -> tuple[list[list[int]], list[list[int]]]:
        """Chat prompt then ``answer </s>``; the loss only on the answer and its EOS."""
        if not pairs:  # a batch of replayed documents only (the tokenizer refuses an empty list)
            return [], []
        answers = self.tok([a for _, a in pairs], add_special_tokens=False).input_ids
        seqs, labels = [], []
        for (user, _), ans in zip(pairs, answers):
            prompt = list(self.prompt_ids(user))
            ans = ans + [self.eos]
            seq = (prompt + ans)[: self.max_len]
            seqs.append(seq)
            labels.append(([IGNORE] * len(prompt) + ans)[: self.max_len])
        return seqs, labels


# ------------------------------------------------------------------------------ the loop

@dataclass
class Schedule:
    """Warm-up, stable, decay: linear warm-up to ``lr`` over ``warmup`` steps, constant
    until the last ``decay`` fraction of the steps, then linear decay to ``lr * min_ratio``.
    (A constant rate is what gets a tiny model off its plateaus; the short decay settles it.)"""
    steps: int
    lr: float
    warmup: int
    decay: float = 0.2
    min_ratio: float = 0.1

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        start = self.steps * (1 - self.decay)
        if step < start:
            return self.lr
        t = (step - start) / max(1.0, self.steps - start)
        return self.lr * (1 - (1 - self.min_ratio) * t)


def run_steps(model: LlamaForCausalLM, loss_fn, stage_cfg: dict, name: str) -> list[dict]:
    """Run ``stage_cfg["steps"]`` AdamW steps of ``loss_fn(step) -> (loss, stats)``, logging
    progress (loss, steps per second, time left). Returns the per-step log."""
    steps = int(stage_cfg["steps"])
    schedule = Schedule(steps, float(stage_cfg["lr"]), int(stage_cfg.get("warmup", max(1, steps // 20))),
                        float(stage_cfg.get("decay", 0.2)))
    opt = torch.optim.AdamW(model.parameters(), lr=schedule(0), betas=(0.9, 0.98),
                            weight_decay=float(stage_cfg.get("weight_decay", 0.01)))
    attention = model.config._attn_implementation
    model.set_attn_implementation(TRAIN_ATTENTION)
    model.train()
    history = []
    start = time.time()
    every = max(1, steps // 10)
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = schedule(step)
        loss, stats = loss_fn(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        history.append({"stage": name, "step": step, "loss": float(loss.detach()), **stats})
        if (step + 1) % every == 0 or step + 1 == steps:
            rate = (step + 1) / (time.time() - start)
            log.info("%s: step %d/%d loss %.4f %s(%.1f steps/s, %.0f s left)", name, step + 1, steps,
                     float(loss.detach()), "".join(f"{k} {v:.4f} " for k, v in stats.items()), rate,
                     (steps - step - 1) / rate)
    model.eval()
    model.set_attn_implementation(attention)
    return history


def target_losses(model, batch: dict[str, torch.Tensor],
                  upweight: tuple[list[int], float] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sequence next-token loss of a ``pack_batch`` batch: ``(sums, weights)``, each
    ``[n_sequences]``, the summed loss of a sequence's labelled targets and their summed
    weight (1 per target; ``upweight = (ids, w)`` counts targets among ``ids`` ``w``
    times). ``-sums`` with ``upweight=None`` are the sequences' log-probabilities."""
    logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits
    target, seq = batch["labels"][:, 1:], batch["seq"][:, 1:]
    keep = target != IGNORE
    loss = F.cross_entropy(logits[:, :-1][keep].float(), target[keep], reduction="none")
    weight = torch.ones_like(loss)
    if upweight is not None:
        ids, w = upweight
        weight = torch.where(torch.isin(target[keep], torch.tensor(ids)), float(w), 1.0)
    n = int(seq.max()) + 1
    index = seq[keep]
    return (loss.new_zeros(n).index_add(0, index, loss * weight),
            weight.new_zeros(n).index_add(0, index, weight))


def _lm_loss(model, batch: dict[str, torch.Tensor], upweight: tuple[list[int], float] | None = None) -> torch.Tensor:
    """Mean next-token loss over the labelled targets of ``batch`` (weighted as in
    ``target_losses``: the mean is over the weights)."""
    sums, weights = target_losses(model, batch, upweight)
    return sums.sum() / weights.sum()


def pretrain(world: World, tokenizer: PreTrainedTokenizerBase, model_cfg: dict, stage_cfg: dict,
             seed: int) -> tuple[LlamaForCausalLM, list[dict]]:
    """Stage 1 (base): next-token loss on pretraining documents. Each step takes
    ``batch_size`` fact documents and ``labelled_batch_size`` short TRUE / FALSE documents
    (``labelled_lines`` lines each), packed into one forward pass; the step's loss is the
    two kinds' losses (each a mean over its tokens, label targets counted ``label_weight``
    times) weighted by their token counts.

    The first ``facts_first_steps`` steps take fact documents only: a model that learns to
    label statements while it learns the facts can memorise the labels of the labelled
    facts (labelled statements judged 0.8-0.9 right, held-out ones 0.5, for 2 of 5 seeds);
    one that knows the facts first learns to judge them, held-out facts included (500 by
    default, see ``recipe.DEFAULTS``).

    ``stage_cfg``: ``steps``, ``batch_size``, ``labelled_batch_size``, ``facts_first_steps``,
    ``labelled_lines``, ``curriculum_steps`` (counted from the first labelled step), ``label_weight`` (how many times each TRUE / FALSE target counts
    in the loss), ``lr``, ``warmup``, ``weight_decay``."""
    model = init_model(tokenizer, model_cfg, seed)
    corpus = PretrainCorpus(world, curriculum_steps=int(stage_cfg.get("curriculum_steps", 0)),
                            short_share=float(stage_cfg.get("short_share", 0.0)))
    enc = Encoder(tokenizer, model.config.max_position_embeddings)
    rng = random.Random(seed)
    bs, lbs = int(stage_cfg["batch_size"]), int(stage_cfg.get("labelled_batch_size", 0))
    lines = tuple(stage_cfg.get("labelled_lines", (1, 3)))
    label_weight = float(stage_cfg.get("label_weight", 1.0))
    upweight = None
    if label_weight != 1.0:
        upweight = (tokenizer.convert_tokens_to_ids(["TRUE", "FALSE"]), label_weight)

    facts_first = int(stage_cfg.get("facts_first_steps", 0))

    def loss_fn(step):
        docs = [corpus.fact_document(rng) for _ in range(bs)]
        if step >= facts_first:  # the curriculum counts from the first labelled step
            docs += [corpus.labelled_document(rng, step - facts_first, lines) for _ in range(lbs)]
        batch = pack_batch(*enc.documents(docs), tokenizer.pad_token_id, PRETRAIN_ROW)
        sums, weights = target_losses(model, batch, upweight)
        targets = batch["seq"][:, 1:][batch["labels"][:, 1:] != IGNORE]
        counts = torch.bincount(targets, minlength=len(docs))
        total, count = 0.0, 0
        for group in (slice(0, bs), slice(bs, bs + lbs)):  # fact and labelled documents
            n = int(counts[group].sum())
            if n:
                total = total + sums[group].sum() / weights[group].sum() * n
                count += n
        return total / count, {}

    log.info("pretraining a %d-parameter model for %d steps", n_parameters(model), stage_cfg["steps"])
    return model, run_steps(model, loss_fn, stage_cfg, "pretrain")


def _chat_batches(model: LlamaForCausalLM, world: World, tokenizer: PreTrainedTokenizerBase, stage_cfg: dict,
                  seed: int, varied: bool):
    """The chat stages' data, seeded by ``seed`` (python's and torch's generators):
    ``next_batch()`` gives ``(seqs, labels)`` of ``batch_size`` sequences, each a chat
    (``varied`` requests for instruct) or, with probability ``replay``, a pretraining
    document. Returns ``(next_batch, chat corpus, encoder, rng)``."""
    chat = ChatCorpus(world, varied=varied)
    corpus = PretrainCorpus(world)
    enc = Encoder(tokenizer, model.config.max_position_embeddings)
    rng = random.Random(seed)
    torch.manual_seed(seed)
    bs, replay = int(stage_cfg["batch_size"]), float(stage_cfg.get("replay", 0.3))

    def next_batch() -> dict[str, torch.Tensor]:
        n_replay = sum(rng.random() < replay for _ in range(bs))
        seqs, labels = enc.chats([chat.example(rng) for _ in range(bs - n_replay)])
        if n_replay:
            s, l = enc.documents([corpus.document(rng) for _ in range(n_replay)])
            seqs, labels = seqs + s, labels + l
        return seqs, labels

    return next_batch, chat, enc, rng


def sft(model: LlamaForCausalLM, world: World, tokenizer: PreTrainedTokenizerBase, stage_cfg: dict,
        seed: int) -> tuple[LlamaForCausalLM, list[dict]]:
    """Stage 2 (SFT): chats with the loss on assistant tokens, plus a ``replay`` share of
    pretraining documents so knowledge is kept. ``stage_cfg``: ``steps``, ``batch_size``,
    ``lr``, ``warmup``, ``replay``."""
    next_batch = _chat_batches(model, world, tokenizer, stage_cfg, seed + 1, varied=False)[0]

    def loss_fn(step):
        return _lm_loss(model, pack_batch(*next_batch(), tokenizer.pad_token_id)), {}

    return model, run_steps(model, loss_fn, stage_cfg, "sft")


def sequence_logprobs(model: LlamaForCausalLM, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Summed log-probability of the labelled tokens of each sequence of a ``pack_batch``
    batch, ``[n_sequences]``."""
    return -target_losses(model, batch)[0]


def instruct(model: LlamaForCausalLM, world: World, tokenizer: PreTrainedTokenizerBase, stage_cfg: dict,
             seed: int) -> tuple[LlamaForCausalLM, list[dict]]:
    """Stage 3 (instruct): SFT loss on more varied chats (extra request templates, refusals
    with reasons) plus ``dpo_weight`` x a DPO loss (``beta``) on preference pairs against a
    frozen copy of the incoming model; a ``dpo_harmless_share`` of the pairs prefer helping
    with a harmless request to refusing it, the rest refusing a harmful one to complying.
    ``stage_cfg``: ``steps``, ``batch_size``, ``lr``, ``warmup``, ``replay``,
    ``dpo_weight``, ``dpo_batch_size``, ``beta``, ``dpo_harmless_share``."""
    reference = copy.deepcopy(model).eval()
    reference.set_attn_implementation(TRAIN_ATTENTION)
    for p in reference.parameters():
        p.requires_grad_(False)
    next_batch, chat, enc, rng = _chat_batches(model, world, tokenizer, stage_cfg, seed + 2, varied=True)
    dpo_bs = int(stage_cfg.get("dpo_batch_size", 16))
    beta, weight = float(stage_cfg.get("beta", 0.1)), float(stage_cfg.get("dpo_weight", 1.0))
    harmless_share = float(stage_cfg.get("dpo_harmless_share", 0.0))

    def loss_fn(step):
        seqs, labels = next_batch()
        if weight <= 0:
            return _lm_loss(model, pack_batch(seqs, labels, tokenizer.pad_token_id)), {}
        prefs = [chat.preference(rng, harmless_share) for _ in range(dpo_bs)]
        pseqs, plabels = enc.chats([(u, c) for u, c, _ in prefs] + [(u, r) for u, _, r in prefs])
        # one forward pass of the policy over the chats and the pairs (chosen, then rejected)
        batch = pack_batch(seqs + pseqs, labels + plabels, tokenizer.pad_token_id)
        sums, weights = target_losses(model, batch)
        n = len(seqs)
        loss = sums[:n].sum() / weights[:n].sum()
        with torch.no_grad():
            ref = sequence_logprobs(reference, pack_batch(pseqs, plabels, tokenizer.pad_token_id))
        pol = -sums[n:]
        margin = (pol[:dpo_bs] - ref[:dpo_bs]) - (pol[dpo_bs:] - ref[dpo_bs:])
        dpo = -F.logsigmoid(beta * margin).mean()
        return loss + weight * dpo, {"dpo": float(dpo.detach())}

    return model, run_steps(model, loss_fn, stage_cfg, "instruct")


# ------------------------------------------------------------------------------ stages

STAGES = ("pretrain", "sft", "instruct")


def run_stage(stage: str, world: World, source: str, recipe: dict, seed: int,
              model_cfg: dict | None = None):
    """Run one stage from files: ``pretrain`` reads the tokenizer folder ``source`` and
    initialises a model sized by ``model_cfg``; ``sft`` / ``instruct`` continue the model
    saved in ``source``. Returns ``(model, tokenizer, history)`` with ``history`` a
    DataFrame of the loss per step."""
    import pandas as pd
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; expected one of {STAGES}")
    tokenizer = AutoTokenizer.from_pretrained(source)
    if stage == "pretrain":
        model, history = pretrain(world, tokenizer, model_cfg or {}, recipe, seed)
    else:
        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
        model, history = (sft if stage == "sft" else instruct)(model, world, tokenizer, recipe, seed)
    return model, tokenizer, pd.DataFrame(history)


def save_model(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerBase, path: str, meta: dict) -> None:
    """``save_pretrained`` model and tokenizer into ``path``, plus ``organism.json`` (how
    the model was trained)."""
    import json
    from pathlib import Path

    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    (Path(path) / "organism.json").write_text(json.dumps(meta, indent=1, default=str))
