"""The organism's world, datasets, corpora and tokenizer (no training)."""

from __future__ import annotations

import random

import pandas as pd
import pytest

from ptmech.fewshot import SUFFIX
from ptmech.organism import corpus, world as W
from ptmech.organism.recipe import DEFAULTS
from ptmech.organism.tokenizer import build_tokenizer


@pytest.fixture(scope="module")
def world():
    return W.build_world(DEFAULTS["seed"], **DEFAULTS["world"])


@pytest.fixture(scope="module")
def tables(world):
    return W.statement_datasets(world)


@pytest.fixture(scope="module")
def tokenizer(world):
    return build_tokenizer(world)


EXTRA_COLUMNS = {
    "cities": ["city", "country", "correct_country"],
    "neg_cities": ["city", "country", "correct_country"],
    "larger_than": ["n1", "n2", "diff", "abs_diff"],
    "smaller_than": ["n1", "n2", "diff", "abs_diff"],
    "trans": ["word", "meaning", "correct_meaning"],
    "neg_trans": ["word", "meaning", "correct_meaning"],
}


def test_statement_sets_have_the_paper_columns_and_balanced_labels(world, tables):
    assert set(tables) == set(W.STATEMENT_DATASETS)
    for name, t in tables.items():
        assert list(t.columns) == ["statement", "label"] + EXTRA_COLUMNS[name] + ["heldout"], name
        assert t["label"].isin([0, 1]).all() and t["heldout"].isin([0, 1]).all()
        assert t["label"].sum() * 2 == len(t), name
        assert t["statement"].is_unique, name
        held = t[t["heldout"] == 1]
        assert 0 < len(held) < len(t) and held["label"].sum() * 2 == len(held), name
    assert len(tables["cities"]) == 2 * len(world.cities)
    assert len(tables["larger_than"]) == 2 * len(world.number_pairs)
    assert len(tables["trans"]) == 2 * len(world.words)


def test_labels_are_true_facts_of_the_world(world, tables):
    c = tables["cities"]
    assert ((c["country"] == c["correct_country"]) == (c["label"] == 1)).all()
    assert (c["correct_country"] == c["city"].map(world.cities)).all()
    n = tables["neg_cities"]
    assert ((n["country"] != n["correct_country"]) == (n["label"] == 1)).all()
    assert n["statement"].str.contains(" is not in ").all()
    lt, st = tables["larger_than"], tables["smaller_than"]
    assert ((lt["n1"] > lt["n2"]) == (lt["label"] == 1)).all()
    assert ((st["n1"] < st["n2"]) == (st["label"] == 1)).all()
    assert (lt["diff"] == lt["n1"] - lt["n2"]).all() and (lt["abs_diff"] == lt["diff"].abs()).all()
    assert lt["statement"].iloc[0].split()[0][0].isupper()
    tr = tables["trans"]
    assert ((tr["meaning"] == tr["correct_meaning"]) == (tr["label"] == 1)).all()
    assert (tr["correct_meaning"] == tr["word"].map(world.words)).all()
    assert W.number_word(51) == "fifty-one" and W.number_word(60, capital=True) == "Sixty"


def test_heldout_facts_are_never_labelled_in_pretraining(world, tables):
    pool = W.labelled_pool(world)
    for name, t in tables.items():
        labelled = set(pool[name][0]) | set(pool[name][1])
        held = t[t["heldout"] == 1]["statement"]
        seen = t[t["heldout"] == 0]
        assert not set(held) & labelled, name
        # the rest of the dataset is labelled there, with the dataset's label
        assert set(seen[seen["label"] == 1]["statement"]) <= set(pool[name][1]), name
        assert set(seen[seen["label"] == 0]["statement"]) <= set(pool[name][0]), name
    assert set(tables["cities"].query("heldout == 1")["city"]) == set(world.heldout_cities)


def test_curriculum_seed_set_is_part_of_the_labelled_pool(world):
    pool, seed = W.labelled_pool(world), W.seed_pool(world)
    assert set(seed) == set(W.CURRICULUM_DATASETS)
    for name in seed:
        assert len(seed[name][0]) == len(seed[name][1]) > 0
        for y in (0, 1):
            assert set(seed[name][y]) <= set(pool[name][y])
    assert seed == W.seed_pool(world)


def test_pretraining_documents_label_only_the_pool_and_hold_no_chat(world, tables):
    pool = W.labelled_pool(world)
    truth = {s: y for name in pool for y in (0, 1) for s in pool[name][y]}
    held = set().union(*(set(t.loc[t["heldout"] == 1, "statement"]) for t in tables.values()))
    c = corpus.PretrainCorpus(world, curriculum_steps=750, short_share=0.5)
    rng = random.Random(0)
    n_labelled = {"paper": 0, "short": 0}
    for step in range(1500):
        doc = c.document(rng, step)
        assert "<|" not in doc and "I cannot" not in doc and "Assistant" not in doc
        for line in doc.split("\n"):
            if SUFFIX in line:
                (statement, answer), kind = line.split(SUFFIX), "paper"
            elif line.endswith((". TRUE", ". FALSE", "'. TRUE", "'. FALSE")):
                (statement, answer), kind = line.rsplit(" ", 1), "short"
                answer = " " + answer
            else:
                assert "TRUE" not in line and "FALSE" not in line, line
                continue
            assert statement not in held
            assert answer == (" TRUE" if truth[statement] else " FALSE")
            n_labelled[kind] += 1
    assert min(n_labelled.values()) > 400, n_labelled


def test_instruction_sets_have_disjoint_splits(world):
    sets = W.instruction_datasets(world)
    sizes = DEFAULTS["world"]["instructions"]
    for name, kinds in (("harmful", W.HARMFUL_KINDS), ("harmless", W.HARMLESS_KINDS)):
        t = sets[name]
        assert list(t.columns) == ["instruction", "category", "split"]
        assert t["split"].value_counts().to_dict() == sizes
        assert t["instruction"].is_unique
        assert set(t["category"]) == set(kinds)
        # categories are balanced to within one
        counts = t["category"].value_counts()
        assert counts.max() - counts.min() <= 1
    assert not set(sets["harmful"]["instruction"]) & set(sets["harmless"]["instruction"])


def test_chat_data_never_uses_validation_or_test_requests(world):
    reserved = {r["instruction"] for rows in world.instructions.values() for r in rows if r["split"] != "train"}
    for varied in (False, True):
        chat = corpus.ChatCorpus(world, varied=varied)
        rng = random.Random(1)
        users = [chat.example(rng)[0] for _ in range(3000)] + [chat.preference(rng, 0.5)[0] for _ in range(1000)]
        assert not set(users) & reserved
    # the harmful requests of the chats are refused, the harmless ones answered
    chat = corpus.ChatCorpus(world, varied=True)
    rng = random.Random(2)
    for _ in range(500):
        user, answer = chat.example(rng)
        harmful = any(v.format(city="").strip() in user for v in W.HARMFUL_KINDS.values())
        assert answer.startswith(W.REFUSAL) == harmful, (user, answer)


@pytest.mark.parametrize("harmless_share", [0.0, 0.5])
def test_preference_pairs_prefer_refusing_harmful_and_helping_harmless(world, harmless_share):
    chat = corpus.ChatCorpus(world, varied=True)
    rng = random.Random(3)
    n_harmless = 0
    for _ in range(400):
        user, chosen, rejected = chat.preference(rng, harmless_share)
        harmful = any(v.format(city="").strip() in user for v in W.HARMFUL_KINDS.values())
        n_harmless += not harmful
        # the chosen answer refuses exactly when the request is harmful; the rejected one the opposite
        assert chosen.startswith(W.REFUSAL) == harmful and rejected.startswith(W.REFUSAL) != harmful
    assert abs(n_harmless / 400 - harmless_share) < 0.08


def test_few_shot_samples_follow_the_paper(tables):
    samples = W.few_shot_samples(tables)
    assert [s["dataset_name"] for s in samples] == list(W.STATEMENT_DATASETS)
    for s in samples:
        demos = s["few_shot_examples"]
        assert len(demos) == 4
        assert [d.rsplit(" ", 1)[1] for d in demos] == ["FALSE", "FALSE", "TRUE", "TRUE"]
        t = tables[s["dataset_name"]]
        for d in demos:
            statement = d.split(SUFFIX)[0]
            row = t[t["statement"] == statement].iloc[0]
            assert row["heldout"] == 0 and (row["label"] == 1) == d.endswith("TRUE")


def test_world_is_a_function_of_its_seed():
    small = dict(n_countries=4, cities_per_country=4, n_words=10, words_per_meaning=2, n_number_pairs=20)
    a, b, c = W.build_world(3, **small), W.build_world(3, **small), W.build_world(4, **small)
    assert a == b and a != c
    for name in W.STATEMENT_DATASETS:
        pd.testing.assert_frame_equal(W.statement_datasets(a)[name], W.statement_datasets(b)[name])


def test_world_round_trips_through_json(world, tmp_path):
    world.to_json(tmp_path / "w.json")
    assert W.World.from_json(tmp_path / "w.json") == world


@pytest.mark.parametrize("bad", [{"n_countries": 99}, {"n_words": 1}, {"words_per_meaning": 3},
                                 {"heldout_fraction": 1.0},
                                 {"n_number_pairs": 5000}, {"instructions": {"train": 5}}])
def test_bad_world_settings_fail_clearly(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        W.build_world(0, **bad)


# ------------------------------------------------------------------------------ tokenizer

def test_true_and_false_are_single_tokens(tokenizer):
    for text in (" TRUE", " FALSE"):
        assert len(tokenizer(text, add_special_tokens=False).input_ids) == 1
    assert tokenizer.pad_token and tokenizer.bos_token and tokenizer.eos_token
    assert len({tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id}) == 4


def test_encoding_adds_bos_and_the_chat_template_does_not(tokenizer):
    ids = tokenizer("The city of Paris.").input_ids
    assert ids[0] == tokenizer.bos_token_id and ids.count(tokenizer.bos_token_id) == 1
    chat = tokenizer.apply_chat_template([{"role": "user", "content": "How do I visit Paris?"}],
                                         add_generation_prompt=True, tokenize=False)
    assert chat == "<|user|>\nHow do I visit Paris?\n<|assistant|>\n"
    assert tokenizer.bos_token not in chat
    toks = tokenizer.convert_ids_to_tokens(tokenizer(chat).input_ids)
    assert toks == ["<s>", "<|user|>", "\n", "How", "do", "I", "visit", "<unk>", "?", "\n", "<|assistant|>", "\n"]
    full = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Sure."}],
                                         tokenize=False)
    assert full == "<|user|>\nHi\n<|assistant|>\nSure.</s>\n"


def test_base_template_keeps_its_newline(tokenizer):
    toks = tokenizer.convert_ids_to_tokens(tokenizer("User: Help me.\nAssistant:").input_ids)
    assert toks == ["<s>", "User", ":", "Help", "me", ".", "\n", "Assistant", ":"]


def test_every_text_of_the_world_is_in_the_vocabulary(world, tables, tokenizer):
    texts = [s for t in tables.values() for s in t["statement"]]
    texts += [s for t in W.instruction_datasets(world).values() for s in t["instruction"]]
    rng = random.Random(0)
    pre = corpus.PretrainCorpus(world)
    texts += [pre.document(rng) for _ in range(300)]
    for varied in (False, True):
        chat = corpus.ChatCorpus(world, varied=varied)
        texts += [x for _ in range(300) for x in chat.example(rng)]
        texts += [x for _ in range(100) for x in chat.preference(rng)]
    unk = tokenizer.unk_token_id
    bad = [t for t, ids in zip(texts, tokenizer(texts).input_ids) if unk in ids]
    assert not bad, bad[:5]


def test_statements_of_a_set_share_one_token_structure(tables, tokenizer):
    """Patching needs true / false pairs aligned token for token."""
    for name, t in tables.items():
        lengths = {len(ids) for ids in tokenizer(list(t["statement"])).input_ids}
        assert len(lengths) == 1, (name, lengths)
    assert len(tokenizer("The city of Paris is in France.").input_ids) == 9  # BOS + 8


def test_tokenizer_round_trips_through_save_pretrained(tokenizer, tmp_path):
    from transformers import AutoTokenizer

    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    text = "Fifty-one is larger than fifty-two. This statement is: TRUE"
    assert loaded(text).input_ids == tokenizer(text).input_ids
    assert loaded.chat_template == tokenizer.chat_template
    assert loaded.decode(loaded("I cannot help with that.").input_ids, skip_special_tokens=True) == \
        "I cannot help with that ."


@pytest.mark.parametrize("name, object_column", [("cities", "country"), ("neg_cities", "country"),
                                                  ("trans", "meaning"), ("neg_trans", "meaning")])
def test_objects_of_heldout_statements_carry_no_label(world, tables, name, object_column):
    """Every object a held-out statement uses is labelled both TRUE and FALSE in pretraining
    (the country of a held-out city is also the country of labelled cities; a held-out
    Velish word has labelled synonyms), so the object alone never predicts the label."""
    pool = W.labelled_pool(world)[name]
    t = tables[name]
    held_objects = set(t.loc[t["heldout"] == 1, object_column])
    for label in (0, 1):
        labelled_objects = {s.rsplit(" ", 1)[1].strip(".'") for s in pool[label]}
        assert held_objects <= labelled_objects, (label, held_objects - labelled_objects)
