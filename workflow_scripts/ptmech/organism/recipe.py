"""The default organism recipe (the ``organism:`` section of the default config.yaml) and a
helper that builds the whole trio into a folder, as the workflow's rules do one by one."""

from __future__ import annotations

import copy
from pathlib import Path

DEFAULTS: dict = {
    "seed": 0,
    # One thread: the weights depend on the thread count, and at 2 threads the same seed gave
    # an instruct model whose refusal no direction carried (ablated, still 1.00) where one
    # thread, as benchmarks/organism_seeds.py trains, gives 0.00; the default run then trains
    # exactly the organism the seed table measures (about 50% slower: base 3:25, not 2:18).
    "threads": 1,
    "world": {
        "n_countries": 16,
        "cities_per_country": 10,
        "n_words": 100,
        "words_per_meaning": 4,
        "n_number_pairs": 400,
        "heldout_fraction": 0.25,
        "instructions": {"train": 256, "val": 64, "test": 100},
    },
    "model": {
        "hidden_size": 64,
        "num_hidden_layers": 6,
        "num_attention_heads": 4,
        "intermediate_size": 256,
        "max_position_embeddings": 256,
        "initializer_range": 0.08,
    },
    # Each step: 16 fact documents and 32 short TRUE / FALSE documents (1-5 lines), the
    # labels counted 5 times in the loss; the first 400 labelled steps label only a small
    # sample of affirmative statements (corpus.PretrainCorpus), which gets the model off the
    # plateau where TRUE and FALSE are equally likely whatever the statement; half the
    # TRUE / FALSE documents put the label right after the statement, so truth is read at its
    # last token. The first 500 steps (facts_first_steps) take fact documents only: a model
    # that learns to label statements while it learns the facts can memorise the labels of
    # the labelled facts and judge held-out ones at chance (seeds 1, 2 and 4 without it);
    # knowing the facts first, every base of seeds 0-4 met its floors (docs/organism-recipe.md).
    "pretrain": {"steps": 1700, "facts_first_steps": 500, "batch_size": 16, "labelled_batch_size": 32,
                 "labelled_lines": [1, 5], "curriculum_steps": 400, "label_weight": 5, "short_share": 0.5,
                 "lr": 0.003, "warmup": 50, "weight_decay": 0.1},
    # Post-training: 300 SFT and 150 instruct steps (about 27 s each on one thread). On the five bases
    # of the earlier recipe (seeds 0-4, 6 request kinds of each, no facts-first;
    # benchmarks/organism_seeds.py), 150 + 75 steps gave SFT models that
    # refused 0.82-0.86 of harmful or 0.12-0.14 of harmless requests for 3 seeds, and an
    # instruct model whose own direction removed refusal for 2; 300 + 150 steps gave SFT
    # models within their floors for every seed and directions that work for 3 of 4 seeds
    # tried (not for seed 2, whose base misses its own floors).
    "sft": {"steps": 300, "batch_size": 32, "lr": 0.001, "warmup": 10, "replay": 0.3},
    # Preference pairs only on harmful requests (refuse rather than comply): pairs that also
    # push harmless requests away from refusing gave a model whose refusal could be removed
    # along its difference-of-means direction but not induced by adding it (issue 5).
    "instruct": {"steps": 150, "batch_size": 32, "lr": 0.0005, "warmup": 10, "replay": 0.3,
                 "dpo_weight": 1.0, "dpo_batch_size": 16, "beta": 0.1, "dpo_harmless_share": 0.0},
    "checks": {"max_new_tokens": 8, "floors": True},
}

MODEL_NAMES = {"pretrain": "organism-base", "sft": "organism-sft", "instruct": "organism-instruct"}


def with_defaults(cfg: dict | None = None) -> dict:
    """``cfg`` merged over ``DEFAULTS`` (one level of nesting)."""
    out = copy.deepcopy(DEFAULTS)
    for key, value in (cfg or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key].update(value)
        else:
            out[key] = value
    return out


def build_trio(root: str | Path, cfg: dict | None = None, stages: tuple[str, ...] = tuple(MODEL_NAMES),
               post_seed: int | None = None) -> dict[str, Path]:
    """World, tokenizer and the three models under ``root`` (``world.json``,
    ``tokenizer/``, ``organism-base/`` ...), trained as the workflow's organism rules train
    them (the same seeds, threads and weights). ``stages`` without ``"pretrain"`` continues
    from the world and base model already under ``root`` (to try post-training recipes on
    one base). ``post_seed`` (default: the recipe's seed) seeds the SFT and instruct stages
    alone: other post-training runs on the same base, to tell what the base decides from
    what one post-training run happened to do. Returns name -> folder."""
    from . import train
    from .tokenizer import build_tokenizer
    from .world import World, build_world

    cfg = with_defaults(cfg)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if "pretrain" in stages:
        train.set_determinism(cfg["seed"], cfg["threads"])
        build_world(cfg["seed"], **cfg["world"]).to_json(root / "world.json")
    world = World.from_json(root / "world.json")
    if "pretrain" in stages:
        build_tokenizer(world).save_pretrained(root / "tokenizer")
    out, source = {}, root / "tokenizer"
    for stage, name in MODEL_NAMES.items():
        if stage in stages:
            train.set_determinism(cfg["seed"], cfg["threads"])  # as each stage's job does
            seed = cfg["seed"] if stage == "pretrain" or post_seed is None else post_seed
            model, tokenizer, _ = train.run_stage(stage, world, str(source), cfg[stage], seed,
                                                  model_cfg=cfg["model"])
            train.save_model(model, tokenizer, str(root / name), {"stage": stage, "seed": seed})
        source = out[name] = root / name
    return out
