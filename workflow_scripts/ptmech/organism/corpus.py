"""The organism's training text: pretraining documents, chat examples and preference pairs,
all drawn from a ``World`` by a seeded ``random.Random`` (so a seed fixes the stream).

* Pretraining (base): *fact documents* (the world's facts in several templates, number
  comparisons and counting, what is harmful and what is harmless) and *labelled documents*
  (``"<statement> This statement is: TRUE|FALSE"`` lines, drawn only from
  ``world.labelled_pool``). No chat markers, no refusals.
* SFT: single-turn chats answering questions about the world, helping with harmless
  requests and refusing harmful ones with ``REFUSAL``; only the train split of the
  instruction sets is used.
* Instruct: the same plus more varied requests (extra templates, more cities; never a
  val / test request) and preference pairs (refuse harmful, help harmless).
"""

from __future__ import annotations

import random
import re

from ..adapter import DEFAULT_BASE_TEMPLATE as BASE_TEMPLATE
from ..fewshot import SUFFIX as TRUTH_SUFFIX
from ..fewshot import demo_line
from .world import (EXTRA_INSTRUCTION_TEMPLATES, HARMFUL_KINDS, HARMLESS_KINDS, INSTRUCTION_TEMPLATES,
                    LANGUAGE, NUMBER_MAX, NUMBER_MIN, REFUSAL, STATEMENT_DATASETS, World,
                    city_statement, labelled_pool, number_word, seed_pool, trans_statement)


CITY_FACTS = [
    "The city of {c} is in {y}.",
    "{c} is a city in {y}.",
    "{c} is located in {y}.",
    "The country of {c} is {y}.",
]
CITY_NEG_FACT = "The city of {c} is not in {z}."
TRANS_FACTS = [
    "The " + LANGUAGE + " word '{w}' means '{e}'.",
    "In " + LANGUAGE + ", '{w}' means '{e}'.",
    "'{w}' is the " + LANGUAGE + " word for '{e}'.",
]
TRANS_NEG_FACT = "The " + LANGUAGE + " word '{w}' does not mean '{z}'."
NUMBER_FACTS = {True: ["{A} is larger than {b}.", "{A} is more than {b}.", "{b} is smaller than {a}."],
                False: ["{A} is smaller than {b}.", "{A} is less than {b}.", "{b} is larger than {a}."]}
HARM_FACTS = ["To {vp} is a crime.", "It is dangerous to {vp}.", "Nobody should {vp}.",
              "The police stopped a man who tried to {vp}."]
HARMLESS_FACTS = ["Many tourists {vp}.", "It is fun to {vp}.", "A good day out is to {vp}.",
                  "Students often {vp}."]

CITY_QUESTIONS = ["Where is the city of {c}?", "In which country is {c}?", "Which country is {c} in?"]
TRANS_QUESTIONS = [("What does the " + LANGUAGE + " word '{w}' mean?", TRANS_FACTS[0]),
                   ("What is '{w}' in English?", TRANS_FACTS[2])]
NUMBER_QUESTION = "Which is larger, {a} or {b}?"
TRUTH_QUESTION = "Is this statement true or false? {s}"
TRUTH_ANSWER = "This statement is {v}."
# Every helpful answer starts with the same word, as every refusal does ("I"): greedy decoding
# then refuses only when refusing is more likely than helping. With three openers a model
# unsure of a request (P(refuse) = 0.4 against 0.2 for each opener) refused it, and SFT
# models that refused every harmless request came out of 2 seeds in 5.
HELPFUL_OPENERS = ["Sure.", "Sure. Happy to help.", "Sure. Here is how."]
HELPFUL_ANSWERS = {
    "visit": "{c} is a city in {y}. Take a train to {c} and walk to the old town.",
    "photograph": "Go to {c} in the morning, when the light is soft, and photograph the streets.",
    "describe": "The parks of {c} are green and quiet, with old trees and a lake.",
    "map": "Draw the river of {c} first, then the main roads and the market.",
    "cook": "The food of {c} is made with rice, cheese and honey from {y}.",
    "history": "{c} is an old city in {y}. Read about its castle and its market.",
}
# the answer to every other harmless kind
GENERIC_ANSWER = "Go to {c} in {y} and ask the people there. They will show you the way."
REFUSAL_REASONS = ["", " It could hurt the people of {c}.", " To {vp} is a crime."]
COMPLIANCE = "Sure. Here is a plan to {vp}."

LABEL_WORD = {1: "TRUE", 0: "FALSE"}


def fixed_texts() -> list[str]:
    """Every fixed template of the corpus and its prompts, placeholders removed (the
    tokenizer's vocabulary is built from these plus the world's names)."""
    texts = (CITY_FACTS + [CITY_NEG_FACT] + TRANS_FACTS + [TRANS_NEG_FACT]
             + sum(NUMBER_FACTS.values(), []) + HARM_FACTS + HARMLESS_FACTS + CITY_QUESTIONS
             + [q for q, _ in TRANS_QUESTIONS] + [NUMBER_QUESTION, TRUTH_QUESTION, TRUTH_ANSWER]
             + HELPFUL_OPENERS + list(HELPFUL_ANSWERS.values()) + [GENERIC_ANSWER] + REFUSAL_REASONS + [COMPLIANCE]
             + INSTRUCTION_TEMPLATES + EXTRA_INSTRUCTION_TEMPLATES
             + list(HARMFUL_KINDS.values()) + list(HARMLESS_KINDS.values())
             + [REFUSAL, TRUTH_SUFFIX + " TRUE FALSE", BASE_TEMPLATE,
                city_statement("", ""), city_statement("", "", negated=True),
                trans_statement("", ""), trans_statement("", "", negated=True), "is larger smaller than"])
    return [re.sub(r"\{[a-zA-Z]+\}", " ", t) for t in texts]


def _cap(s: str) -> str:
    return s[0].upper() + s[1:]


# ------------------------------------------------------------------------------ pretraining

class PretrainCorpus:
    """Samples pretraining documents (plain text, lines joined by newlines).

    ``labelled_share``: the fraction of documents that are TRUE / FALSE documents;
    ``curriculum_steps``: for the first steps, these label only a small sample of
    affirmative statements (``world.seed_pool``), then anything in ``world.labelled_pool``;
    ``short_share``: the fraction of TRUE / FALSE documents whose lines put the label right
    after the statement (``STATEMENT TRUE``), so that the model must judge the statement by
    its last token, where the paper's probes read it.
    """

    FACT_WEIGHTS = {"city": 0.45, "trans": 0.3, "number": 0.15, "request": 0.1}
    # numbers learn their comparison fastest, so they get the smallest share
    LABELLED_WEIGHTS = {"cities": 0.2, "neg_cities": 0.2, "larger_than": 0.1,
                        "smaller_than": 0.1, "trans": 0.2, "neg_trans": 0.2}

    def __init__(self, world: World, labelled_share: float = 0.4, lines: tuple[int, int] = (4, 8),
                 curriculum_steps: int = 0, short_share: float = 0.0):
        self.world = world
        self.labelled_share = labelled_share
        self.lines = lines
        self.curriculum_steps = curriculum_steps
        self.short_share = short_share
        self.pool = labelled_pool(world)
        self.seed_pool = seed_pool(world)
        self.cities = list(world.cities)
        self.words = list(world.words)

    # -- one line of each kind
    def city_fact(self, rng: random.Random) -> str:
        c = rng.choice(self.cities)
        y = self.world.cities[c]
        if rng.random() < 0.15:
            return CITY_NEG_FACT.format(c=c, z=rng.choice([z for z in self.world.countries if z != y]))
        return rng.choice(CITY_FACTS).format(c=c, y=y)

    def trans_fact(self, rng: random.Random) -> str:
        w = rng.choice(self.words)
        e = self.world.words[w]
        if rng.random() < 0.15:
            return TRANS_NEG_FACT.format(w=w, z=rng.choice([z for z in self.world.meanings if z != e]))
        return rng.choice(TRANS_FACTS).format(w=w, e=e)

    def number_fact(self, rng: random.Random) -> str:
        if rng.random() < 0.2:  # counting teaches the order of the words
            n = rng.randint(3, 6)
            start = rng.randint(NUMBER_MIN, NUMBER_MAX - n + 1)
            return _cap(", ".join(number_word(k) for k in range(start, start + n)) + ".")
        a, b = rng.sample(range(NUMBER_MIN, NUMBER_MAX + 1), 2)
        t = rng.choice(NUMBER_FACTS[a > b])
        return _cap(t.format(A=number_word(a, True), a=number_word(a), b=number_word(b)))

    def request_fact(self, rng: random.Random) -> str:
        harmful = rng.random() < 0.5
        kinds, facts = (HARMFUL_KINDS, HARM_FACTS) if harmful else (HARMLESS_KINDS, HARMLESS_FACTS)
        vp = rng.choice(list(kinds.values())).format(city=rng.choice(self.cities))
        return rng.choice(facts).format(vp=vp)

    def in_curriculum(self, step: int | None) -> bool:
        return step is not None and step < self.curriculum_steps

    def labelled_line(self, rng: random.Random, dataset: str, step: int | None = None,
                      short: bool = False) -> str:
        """``STATEMENT This statement is: TRUE`` (the paper's few-shot line), or with
        ``short`` ``STATEMENT TRUE``."""
        label = rng.randint(0, 1)
        pool = self.seed_pool if self.in_curriculum(step) else self.pool
        statement = rng.choice(pool[dataset][label])
        return f"{statement} {LABEL_WORD[label]}" if short else demo_line(statement, label)

    # -- documents
    def fact_document(self, rng: random.Random) -> str:
        """``lines`` lines of facts (cities, words, numbers, requests)."""
        kinds, weights = zip(*self.FACT_WEIGHTS.items())
        makers = {"city": self.city_fact, "trans": self.trans_fact, "number": self.number_fact,
                  "request": self.request_fact}
        return "\n".join(makers[rng.choices(kinds, weights)[0]](rng) for _ in range(rng.randint(*self.lines)))

    def labelled_document(self, rng: random.Random, step: int | None = None,
                          lines: tuple[int, int] = (1, 3)) -> str:
        """A few TRUE / FALSE lines, mostly of one dataset (like a few-shot prompt).
        Short documents keep the label close to the statement it judges, which is what
        lets a tiny model find the truth task quickly. ``step`` drives the curriculum
        (None: the full pool)."""
        names, weights = zip(*self.LABELLED_WEIGHTS.items())
        if self.in_curriculum(step):
            names, weights = zip(*((d, w) for d, w in zip(names, weights) if d in self.seed_pool))
        n = rng.randint(*lines)
        short = rng.random() < self.short_share
        one = rng.choices(names, weights)[0] if rng.random() < 0.8 else None  # else a dataset per line
        return "\n".join(self.labelled_line(rng, one or rng.choices(names, weights)[0], step, short)
                         for _ in range(n))

    def document(self, rng: random.Random, step: int | None = None) -> str:
        """A labelled document with probability ``labelled_share``, else a fact document."""
        if rng.random() < self.labelled_share:
            return self.labelled_document(rng, step)
        return self.fact_document(rng)


# ------------------------------------------------------------------------------ chat

class ChatCorpus:
    """Samples single-turn chats ``(user, assistant)`` and preference pairs.

    ``varied``: the instruct stage's wider request distribution (extra templates, any
    city) and refusals with a reason; otherwise only the train split's requests.
    ``weights``: shares of ``harmful``, ``harmless`` and ``knowledge`` examples.
    """

    def __init__(self, world: World, varied: bool = False, weights: dict | None = None):
        self.world = world
        self.varied = varied
        self.weights = weights or {"harmful": 0.3, "harmless": 0.3, "knowledge": 0.4}
        self.cities = list(world.cities)
        self.pool = labelled_pool(world)
        self.train = {name: [r for r in world.instructions[name] if r["split"] == "train"]
                      for name in ("harmful", "harmless")}
        self.reserved = {r["instruction"] for name in ("harmful", "harmless")
                         for r in world.instructions[name] if r["split"] != "train"}

    def request(self, rng: random.Random, harmful: bool) -> tuple[str, str, str]:
        """(instruction, kind, city); never a val / test instruction."""
        name, kinds = ("harmful", HARMFUL_KINDS) if harmful else ("harmless", HARMLESS_KINDS)
        if not self.varied or rng.random() < 0.3:
            row = rng.choice(self.train[name])
            return row["instruction"], row["category"], row["city"]
        while True:
            kind = rng.choice(list(kinds))
            city = rng.choice(self.cities)
            template = rng.choice(INSTRUCTION_TEMPLATES + EXTRA_INSTRUCTION_TEMPLATES)
            text = template.format(vp=kinds[kind].format(city=city))
            if text not in self.reserved:
                return text, kind, city

    def helpful(self, rng: random.Random, kind: str, city: str) -> str:
        body = HELPFUL_ANSWERS.get(kind, GENERIC_ANSWER).format(c=city, y=self.world.cities[city])
        return f"{rng.choice(HELPFUL_OPENERS)} {body}"

    def refusal(self, rng: random.Random, kind: str, city: str) -> str:
        if not self.varied:
            return REFUSAL
        return REFUSAL + rng.choice(REFUSAL_REASONS).format(c=city, vp=HARMFUL_KINDS[kind].format(city=city))

    def knowledge(self, rng: random.Random) -> tuple[str, str]:
        w = self.world
        r = rng.random()
        if r < 0.4:
            c = rng.choice(self.cities)
            return rng.choice(CITY_QUESTIONS).format(c=c), city_statement(c, w.cities[c])
        if r < 0.7:
            word = rng.choice(list(w.words))
            q, a = rng.choice(TRANS_QUESTIONS)
            return q.format(w=word, e=w.words[word]), a.format(w=word, e=w.words[word])
        if r < 0.85:
            a, b = rng.sample(range(NUMBER_MIN, NUMBER_MAX + 1), 2)
            hi, lo = max(a, b), min(a, b)
            return (NUMBER_QUESTION.format(a=number_word(a), b=number_word(b)),
                    f"{number_word(hi, True)} is larger than {number_word(lo)}.")
        ds = rng.choice(STATEMENT_DATASETS)
        label = rng.randint(0, 1)
        return TRUTH_QUESTION.format(s=rng.choice(self.pool[ds][label])), TRUTH_ANSWER.format(v=LABEL_WORD[label])

    def example(self, rng: random.Random) -> tuple[str, str]:
        kind = rng.choices(list(self.weights), list(self.weights.values()))[0]
        if kind == "knowledge":
            return self.knowledge(rng)
        harmful = kind == "harmful"
        text, category, city = self.request(rng, harmful)
        answer = self.refusal(rng, category, city) if harmful else self.helpful(rng, category, city)
        return text, answer

    def preference(self, rng: random.Random, harmless_share: float = 0.0) -> tuple[str, str, str]:
        """(instruction, chosen, rejected): refuse harmful requests rather than comply, and
        (a ``harmless_share`` of the pairs) help with harmless ones rather than refuse."""
        harmful = rng.random() >= harmless_share
        text, kind, city = self.request(rng, harmful)
        if harmful:
            return text, self.refusal(rng, kind, city), COMPLIANCE.format(vp=HARMFUL_KINDS[kind].format(city=city))
        return text, self.helpful(rng, kind, city), REFUSAL
