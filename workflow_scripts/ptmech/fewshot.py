"""The few-shot TRUE/FALSE query that knowledge patching, truth steering and the
organism's checks all use (METHODS.md §3.2, §4.5):

    "{demo 1} This statement is: TRUE\\n{demo 2} This statement is: FALSE\\n...
     {statement} This statement is:"

and the answer tokens " TRUE" / " FALSE" (``answer_token_ids``: the first token of each
when a tokenizer splits them).
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


MULTI_TOKEN_ANSWERS = ("error", "first", "last")


def answer_token_ids(tokenizer, multi_token: str = "first") -> tuple[int, int]:
    """Token ids of " TRUE" and " FALSE". When a tokenizer splits either into several
    tokens: their first tokens (``"first"``, the default: the model's own next-token
    prediction after the query, e.g. " TR" vs " F" for GPT-2 and SmolLM2), their last
    (``"last"``, the paper's code, which can compare sub-pieces the model would never
    predict next, such as "UE" vs "ALSE"), or an error (``"error"``). Either way the two
    ids must differ, else an error naming the shared token."""
    if multi_token not in MULTI_TOKEN_ANSWERS:
        raise ValueError(f"multi_token_answers must be one of {MULTI_TOKEN_ANSWERS}, got {multi_token!r}")
    pieces = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in (ANSWERS[1], ANSWERS[0])]
    name = getattr(tokenizer, "name_or_path", "")
    if multi_token == "error" and any(len(t) != 1 for t in pieces):
        text, toks = next((a, t) for a, t in zip((ANSWERS[1], ANSWERS[0]), pieces) if len(t) != 1)
        raise ValueError(
            f"tokenizer {name!r}: {text!r} is {len(toks)} tokens {tokenizer.convert_ids_to_tokens(toks)}, not one; "
            f"set multi_token_answers to first (the model's next-token prediction) or last (the paper's code)")
    ids = [t[0] if multi_token != "last" else t[-1] for t in pieces]
    if ids[0] == ids[1]:
        raise ValueError(f"tokenizer {name!r}: the {multi_token} tokens of {ANSWERS[1]!r} and {ANSWERS[0]!r} are the "
                         f"same token {tokenizer.convert_ids_to_tokens([ids[0]])}; choose the other multi_token_answers")
    return ids[0], ids[1]
