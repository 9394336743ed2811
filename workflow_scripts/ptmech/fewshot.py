"""The few-shot TRUE/FALSE query that knowledge patching, truth steering and the
organism's checks all use (METHODS.md §3.2, §4.5):

    "{demo 1} This statement is: TRUE\\n{demo 2} This statement is: FALSE\\n...
     {statement} This statement is:"

and the answer tokens " TRUE" / " FALSE", which must be single tokens.
"""

from __future__ import annotations

import random
from typing import Sequence

SUFFIX = " This statement is:"
ANSWERS = {1: " TRUE", 0: " FALSE"}


def demo_line(statement: str, label: int) -> str:
    return f"{statement}{SUFFIX}{ANSWERS[int(label)]}"


def query(demos: Sequence[tuple[str, int]], statement: str) -> str:
    """Demonstrations (statement, label), one per line, then the unanswered statement."""
    return "".join(demo_line(s, y) + "\n" for s, y in demos) + statement + SUFFIX


def pick_demos(pool: Sequence[tuple[str, int]], exclude: set[str], n_true: int = 2, n_false: int = 2,
               seed: int = 1, what: str = "") -> list[tuple[str, int]]:
    """``n_true`` true and ``n_false`` false demonstrations drawn (seeded) from ``pool``,
    never a statement in ``exclude``, in a seeded shuffled order. Too few is an error that
    starts with ``what`` (the dataset and the setting that asked for them)."""
    rng = random.Random(seed)
    chosen: list[tuple[str, int]] = []
    for label, n in ((1, n_true), (0, n_false)):
        candidates = [(s, y) for s, y in pool if int(y) == label and s not in exclude]
        if len(candidates) < n:
            raise ValueError(f"{what + ': ' if what else ''}only {len(candidates)} demonstrations with label "
                             f"{label} available, need {n}")
        chosen += rng.sample(candidates, n)
    rng.shuffle(chosen)
    return chosen


def answer_token_ids(tokenizer) -> tuple[int, int]:
    """Token ids of " TRUE" and " FALSE". Each must be a single token, else the logit
    difference would compare sub-pieces; that is an error naming the tokenizer."""
    ids = []
    for text in (ANSWERS[1], ANSWERS[0]):
        toks = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(toks) != 1:
            raise ValueError(
                f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r}: {text!r} is {len(toks)} tokens "
                f"{tokenizer.convert_ids_to_tokens(toks)}, not one; the TRUE/FALSE logit difference needs single tokens"
            )
        ids.append(toks[0])
    return ids[0], ids[1]
