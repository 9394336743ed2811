"""True/false statement pairs for knowledge patching (METHODS.md §3.1, §3.2).

A pair is a true and a false statement of one dataset with the same last word (so the same
object and, usually, a different subject), rendered as the same few-shot TRUE/FALSE query.
Patching the true run into the false run at (block, position) then shows where the model
reads the fact.

The paper hard-codes one token template per model family. Here a dataset's *skeleton*
(``"The city of {subject} is in {object}."``) locates the subject and the object in each
statement's characters, the tokenizer's offsets map them to tokens, and only statements
whose token layout is the dataset's most common one are kept, so that every kept statement
has the same length with the subject and object at the same positions. No token id is
written down anywhere.

Each token position of the patched window (the statement's tokens without BOS, then the
tokens of `` This statement is:``; for completion queries the statement's tokens before its
object) is a *column* with a role label (``[s1]``, ``[o1]`` or the token's own text) and a
role group (``subject``, ``object``, ``last``, ``other``).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any, Sequence

from ..fewshot import SUFFIX, pick_demos, query

FORMAT = "ptmech-knowledge-pairs/1"
SLOTS = ("subject", "object")

# Skeletons of the datasets the paper and the organism use; the config adds or replaces.
DEFAULT_SKELETONS: dict[str, list[str]] = {
    "cities": ["The city of {subject} is in {object}."],
    "neg_cities": ["The city of {subject} is not in {object}."],
    "larger_than": ["{subject} is larger than {object}."],
    "smaller_than": ["{subject} is smaller than {object}."],
    "sp_en_trans": ["The Spanish word '{subject}' means '{object}'."],
    "neg_sp_en_trans": ["The Spanish word '{subject}' does not mean '{object}'."],
    "trans": ["The Velish word '{subject}' means '{object}'."],
    "neg_trans": ["The Velish word '{subject}' does not mean '{object}'."],
    "element_symb": ["{subject} has the symbol {object}."],
    "animal_class": ["The {subject} is a {object}."],
}


class PairsError(ValueError):
    pass


def skeletons_for(dataset: str, configured: dict[str, list[str]] | None = None) -> list[str]:
    """The skeletons of ``dataset``: the configured ones if given, else the built-in ones."""
    found = (configured or {}).get(dataset) or DEFAULT_SKELETONS.get(dataset)
    if not found:
        raise PairsError(f"knowledge: dataset {dataset!r} has no skeleton; give knowledge.skeletons.{dataset}, "
                         f"e.g. [\"The city of {{subject}} is in {{object}}.\"]")
    return list(found)


def skeleton_regex(skeleton: str) -> re.Pattern:
    """A skeleton's literal text, with ``{subject}`` and ``{object}`` matching anything."""
    parts = re.split(r"(\{subject\}|\{object\})", skeleton)
    slots = [p[1:-1] for p in parts if p in ("{subject}", "{object}")]
    if sorted(slots) != sorted(SLOTS):
        raise PairsError(f"skeleton {skeleton!r} must hold {{subject}} and {{object}} exactly once each")
    pattern = "".join(f"(?P<{p[1:-1]}>.+?)" if p in ("{subject}", "{object}") else re.escape(p) for p in parts)
    return re.compile(f"^{pattern}$")


def require_match(dataset: str, statements: Sequence[str], skeletons: Sequence[str]) -> list[re.Pattern]:
    """The skeletons' patterns; a PairsError naming the dataset when no statement matches
    any of them (a skeleton that does not fit the dataset's wording)."""
    patterns = [skeleton_regex(s) for s in skeletons]
    if not any(slot_spans(s, patterns) is not None for s in statements):
        first = repr(statements[0]) if len(statements) else "none, the dataset is empty"
        raise PairsError(f"dataset {dataset!r}: no statement matches its skeleton(s) {list(skeletons)}; "
                         f"first statement: {first}")
    return patterns


def slot_spans(statement: str, patterns: Sequence[re.Pattern]) -> dict[str, tuple[int, int]] | None:
    """Character spans ``{"subject": (start, end), "object": (start, end)}`` by the first
    matching skeleton, or None when none matches."""
    for pat in patterns:
        m = pat.match(statement)
        if m:
            return {slot: m.span(slot) for slot in SLOTS}
    return None


@dataclass(frozen=True)
class Column:
    """One token position of the patched window."""

    role: str   # "[s1]", "[o2]", or the token's text ("city", ".", ":")
    part: str   # subject, object, statement (other statement tokens), suffix
    group: str  # subject, object, last, other: the groups of the role-group statistics


def token_columns(tokenizer: Any, text: str, start: int, end: int,
                  spans: dict[str, tuple[int, int]]) -> tuple[list[int], list[Column]]:
    """Token ids of ``text`` (BOS as the tokenizer adds it) and the columns of its tokens
    from character ``start`` (where the statement begins) to the end of the text; the
    statement ends at character ``end``, the query suffix follows.

    ``spans`` are the subject / object character spans relative to ``start``. A token
    belongs to a slot if its characters overlap the slot's; special tokens (empty offsets)
    are never columns."""
    enc = tokenizer(text, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    first = next((i for i, (s, e) in enumerate(offsets) if e > s and e > start), None)
    if first is None:
        raise PairsError(f"no token of {text!r} lies at or after character {start}")
    columns, counts = [], Counter()
    for s, e in offsets[first:]:
        slot = next((n for n, (a, b) in spans.items() if s < start + b and e > start + a), None)
        if slot:
            counts[slot] += 1
            columns.append(Column(f"[{slot[0]}{counts[slot]}]", slot, slot))
            continue
        label = text[s:e].strip() or repr(text[s:e])
        part = "statement" if s < end else "suffix"
        columns.append(Column(label, part, "other"))
    last = columns[-1]
    columns[-1] = Column(last.role, last.part, "last")
    return ids, columns


def _layout(columns: list[Column], ids: list[int]) -> tuple:
    """What must be equal for two statements to share a template: roles in order and the
    token ids outside the slots."""
    n = len(columns)
    return tuple((c.role, None if c.part in SLOTS else tok) for c, tok in zip(columns, ids[-n:]))


def last_word(statement: str) -> str:
    """The last whitespace-separated word with its punctuation ("Venezuela.")."""
    words = statement.split()
    return words[-1] if words else ""


def match_by_last_word(trues: Sequence[int], falses: Sequence[int], keys: Sequence[str],
                       reuse_unique_false: bool = True) -> tuple[list[tuple[int, int]], int]:
    """The paper's pairing (§3.1 step 3). Each true statement, in order, takes a false one
    with the same key (``keys[i]``: the paper's last word, or the object): the last of that
    key's pool, removed from it, when the pool holds more than one; when it holds exactly
    one, that one is used and (with ``reuse_unique_false``, as in the paper) kept, so later
    true statements may reuse it.

    Returns (true index, false index) pairs and the number of unmatched true statements."""
    pools: dict[str, list[int]] = defaultdict(list)
    for j in falses:
        pools[keys[j]].append(j)
    pairs, unmatched = [], 0
    for i in trues:
        pool = pools.get(keys[i])
        if not pool:
            unmatched += 1
            continue
        if len(pool) > 1 or not reuse_unique_false:
            pairs.append((i, pool.pop()))
        else:
            pairs.append((i, pool[0]))
    return pairs, unmatched


PAIR_BY = ("last_word", "object")


QUERIES = ("question", "completion")


def query_parts(statement: str, spans: dict[str, tuple[int, int]], mode: str) -> tuple[str, str, dict]:
    """What of a statement a query shows: (text, suffix after it, slot spans within text).

    ``question`` (the paper's default): the whole statement, then `` This statement is:``.
    ``completion`` (the paper's ``need_question=False``): the statement cut before its
    object ("The city of X is in"; "The Spanish word 'x' means '"), nothing after; the
    model's answer is the object."""
    if mode == "question":
        return statement, SUFFIX, spans
    if spans["subject"][1] > spans["object"][0]:
        raise PairsError(f"completion queries need the subject before the object: {statement!r}")
    return statement[:spans["object"][0]].rstrip(" "), "", {"subject": spans["subject"]}


def render_query(demos: Sequence[tuple[str, int]], text: str, mode: str) -> str:
    """The prompt of one statement: ``fewshot.query`` for questions; for completions the
    (true) demonstration statements one per line, then the cut statement."""
    if mode == "question":
        return query(demos, text)
    return "".join(d + "\n" for d, _ in demos) + text


def build_pairs(tokenizer: Any, statements: Sequence[str], labels: Sequence[int], dataset: str,
                skeletons: Sequence[str], *, pair_by: str = "last_word", reuse_unique_false: bool = True,
                max_pairs: int | None = None, query_mode: str = "question",
                n_true_demos: int = 2, n_false_demos: int = 2, seed: int = 1) -> dict:
    """True/false pairs of one dataset for one tokenizer, with their few-shot prompts.

    1. Statements matching a skeleton are tokenised as the query shows them (BOS included;
       ``query_parts``); those whose layout (column roles, token ids outside the slots) is
       the most common one are kept.
    2. Kept true and false statements are matched (``match_by_last_word``) by their last
       whitespace-separated word with its punctuation (``pair_by="last_word"``, the paper)
       or by their object's text (``pair_by="object"``: the same for the paper's datasets,
       and right for statements that end in a separate " ."); the first ``max_pairs``
       pairs are kept.
    3. Pair ``i`` gets ``n_true_demos`` + ``n_false_demos`` demonstrations drawn from the
       whole dataset, never the pair's own statements, seeded by ``(seed, i)``; both of its
       prompts share them, so they are token-aligned. Completion queries show true
       demonstrations only (the paper's no-question mode), as plain statements.
    4. Each prompt is tokenised in full; a pair whose window (the last T tokens) does not
       have the template's roles in context, or whose prompts differ in length, is dropped.

    Returns a JSON-ready dict: ``columns`` (the T columns, earliest first), ``pairs`` (rows,
    statements, prompts and token ids) and counts of what was dropped and why."""
    if pair_by not in PAIR_BY:
        raise PairsError(f"pair_by must be one of {PAIR_BY}, got {pair_by!r}")
    if query_mode not in QUERIES:
        raise PairsError(f"query must be one of {QUERIES}, got {query_mode!r}")
    if query_mode == "completion":
        n_false_demos = 0
    patterns = require_match(dataset, statements, skeletons)
    labels = [int(y) for y in labels]
    parsed: dict[int, tuple[list[int], list[Column]]] = {}
    keys: dict[int, str] = {}
    shown: dict[int, tuple[str, str, dict]] = {}
    for i, s in enumerate(statements):
        spans = slot_spans(s, patterns)
        if spans is not None:
            shown[i] = text, tail, text_spans = query_parts(s, spans, query_mode)
            parsed[i] = token_columns(tokenizer, text + tail, 0, len(text), text_spans)
            keys[i] = last_word(s) if pair_by == "last_word" else s[slice(*spans["object"])]
    layouts = {i: _layout(cols, ids) for i, (ids, cols) in parsed.items()}
    modal, _ = Counter(layouts.values()).most_common(1)[0]
    kept = [i for i in parsed if layouts[i] == modal]
    columns = parsed[kept[0]][1]
    trues = [i for i in kept if labels[i] == 1]
    falses = [i for i in kept if labels[i] == 0]
    matched, unmatched = match_by_last_word(trues, falses, keys, reuse_unique_false)
    n_matched = len(matched)
    if max_pairs:
        matched = matched[:max_pairs]

    pool = list(zip(statements, labels))
    pairs, misaligned = [], 0
    for n, (i, j) in enumerate(matched):
        demos = pick_demos(pool, exclude={statements[i], statements[j]}, n_true=n_true_demos,
                           n_false=n_false_demos, seed=seed * 1_000_003 + n,
                           what=f"dataset {dataset!r} (knowledge.n_true_demos, knowledge.n_false_demos)")
        entry = {"true_row": i, "false_row": j, "true": statements[i], "false": statements[j]}
        ok = True
        for side, k in (("true", i), ("false", j)):
            text, tail, text_spans = shown[k]
            prompt = render_query(demos, text, query_mode)
            start = len(prompt) - len(text) - len(tail)
            ids, cols = token_columns(tokenizer, prompt, start, start + len(text), text_spans)
            ok &= [(c.role, c.part) for c in cols] == [(c.role, c.part) for c in columns]
            entry[f"{side}_prompt"], entry[f"{side}_ids"] = prompt, ids
        ok &= len(entry["true_ids"]) == len(entry["false_ids"])
        if ok:
            pairs.append(entry)
        else:
            misaligned += 1
    if not pairs:
        raise PairsError(f"dataset {dataset!r}: no true/false pair left ({len(kept)} statements fit the "
                         f"template, {n_matched} pairs matched by last word, {misaligned} misaligned in context)")
    return {
        "format": FORMAT,
        "dataset": dataset,
        "skeletons": list(skeletons),
        "pair_by": pair_by,
        "query": query_mode,
        "columns": [c.__dict__ for c in columns],
        "positions": list(range(-len(columns), 0)),
        "counts": {
            "statements": len(statements),
            "match_skeleton": len(parsed),
            "fit_template": len(kept),
            "true": len(trues),
            "false": len(falses),
            "unmatched_true": unmatched,
            "matched_pairs": n_matched,
            "misaligned_in_context": misaligned,
            "pairs": len(pairs),
            "distinct_false": len({p["false_row"] for p in pairs}),
        },
        "pairs": pairs,
    }


def prompt_tokens_sha256(pairs: Sequence[dict], answer_ids: Sequence[int]) -> str:
    """A hash of every prompt's token ids and the answer ids: two models whose tokenizers
    give the same hash can be patched into each other on these pairs."""
    h = hashlib.sha256(json.dumps(list(answer_ids)).encode())
    for p in pairs:
        h.update(json.dumps([p["true_ids"], p["false_ids"]]).encode())
    return h.hexdigest()


def check_tokenization(tokenizer: Any, doc: dict, model: str) -> None:
    """Raise unless ``tokenizer`` (of ``model``) gives every prompt of the pairs file ``doc``
    the token ids that the family's first model's tokenizer gave it: models of a family
    are patched into each other position by position, so they must tokenise alike."""
    for i, p in enumerate(doc["pairs"]):
        for side in ("true", "false"):
            ids, want = tokenizer(p[f"{side}_prompt"])["input_ids"], p[f"{side}_ids"]
            if ids != want:
                at = next((k for k, (a, b) in enumerate(zip(ids, want)) if a != b), min(len(ids), len(want)))
                raise PairsError(
                    f"model {model!r} tokenises the {side} prompt of pair {i} of {doc.get('family')}/{doc['dataset']} "
                    f"differently from {doc.get('tokenizer_model')!r}, whose tokenizer made the pairs ({len(ids)} vs "
                    f"{len(want)} tokens, first difference at token {at}); models of one family must share a tokenizer"
                )
