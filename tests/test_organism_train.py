"""Training the organism: determinism of a short stage, the saved models' interface, and
(slow) the behaviour of the default trio against floors that a broken recipe would miss."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from ptmech.organism import recipe, train
from ptmech.organism import world as W
from ptmech.organism.tokenizer import build_tokenizer

REPO = Path(__file__).resolve().parents[1]

SMALL_WORLD = dict(n_countries=4, cities_per_country=4, n_words=10, words_per_meaning=2, n_number_pairs=20,
                   instructions={"train": 16, "val": 4, "test": 8})
SMALL_MODEL = dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                   max_position_embeddings=256)
SHORT = {"steps": 4, "batch_size": 4, "lr": 0.003, "warmup": 1}
# the base stage's own knobs, so that the determinism test runs every pretraining path
SHORT_PRETRAIN = {**SHORT, "labelled_batch_size": 4, "labelled_lines": [1, 3], "curriculum_steps": 2,
                  "label_weight": 5, "short_share": 0.5}


@pytest.fixture(scope="module")
def small():
    world = W.build_world(0, **SMALL_WORLD)
    return world, build_tokenizer(world)


def _pretrain(small, seed):
    world, tok = small
    train.set_determinism(seed, 2)
    model, history = train.pretrain(world, tok, SMALL_MODEL, SHORT_PRETRAIN, seed)
    return model, history


def test_same_seed_gives_bit_identical_weights(small):
    a, ha = _pretrain(small, 7)
    b, hb = _pretrain(small, 7)
    c, _ = _pretrain(small, 8)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert a.config._attn_implementation == "sdpa"  # trained with TRAIN_ATTENTION, saved with the default
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert [h["loss"] for h in ha] == [h["loss"] for h in hb]
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_facts_first_steps_hold_back_the_labelled_documents(small, monkeypatch):
    """The first facts_first_steps steps see fact documents only, and the curriculum
    counts its steps from the first labelled one."""
    from ptmech.organism import corpus

    seen = []
    original = corpus.PretrainCorpus.labelled_document

    def spy(self, rng, step=None, lines=(1, 3)):
        seen.append(step)
        return original(self, rng, step, lines)

    monkeypatch.setattr(corpus.PretrainCorpus, "labelled_document", spy)
    world, tok = small
    train.set_determinism(0, 2)
    train.pretrain(world, tok, SMALL_MODEL, {**SHORT_PRETRAIN, "steps": 5, "facts_first_steps": 3}, 0)
    assert seen == [0] * 4 + [1] * 4  # labelled_batch_size 4, at steps 3 and 4


def test_schedule_warms_up_holds_then_decays_to_its_floor():
    s = train.Schedule(steps=100, lr=1.0, warmup=10, decay=0.2, min_ratio=0.1)
    assert [s(i) for i in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert s(10) == s(50) == s(80) == 1.0
    assert s(90) == pytest.approx(1.0 - 0.9 * 0.5) and s(100) == pytest.approx(0.1)


def test_label_weight_counts_the_chosen_targets_that_many_times(small):
    """The weighted loss is the mean over per-token losses with weight w on the chosen
    targets: with w = 1, or with ids that never occur, it is the model's own loss."""
    _, tok = small
    model = train.init_model(tok, SMALL_MODEL, 0)
    enc = train.Encoder(tok, 256)
    seqs, labels = enc.documents(["The city of X is in Y . This statement is : TRUE", "a b"])
    batch = train.pack_batch(seqs, labels, tok.pad_token_id)
    true_id = tok.convert_tokens_to_ids("TRUE")
    with torch.no_grad():
        plain = float(train._lm_loss(model, batch))
        assert float(train._lm_loss(model, batch, ([true_id], 1.0))) == pytest.approx(plain, rel=1e-5)
        assert float(train._lm_loss(model, batch, ([10**6], 7.0))) == pytest.approx(plain, rel=1e-5)
        # the reference: each document alone, the loss of every token after the first
        per_token, targets = [], []
        for s in seqs:
            ids = torch.tensor([s])
            per_token.append(torch.nn.functional.cross_entropy(model(ids).logits[0, :-1], ids[0, 1:],
                                                               reduction="none"))
            targets.append(ids[0, 1:])
        per_token, targets = torch.cat(per_token), torch.cat(targets)
        assert plain == pytest.approx(float(per_token.mean()), rel=1e-5)
        w = torch.where(targets == true_id, 5.0, 1.0)
        assert int((targets == true_id).sum()) == 1
        weighted = float(train._lm_loss(model, batch, ([true_id], 5.0)))
    assert weighted == pytest.approx(float((per_token * w).sum() / w.sum()), rel=1e-5)
    assert weighted != pytest.approx(plain, rel=1e-3)


@pytest.mark.parametrize("attention", ["sdpa", train.TRAIN_ATTENTION])
def test_packed_sequences_see_only_themselves(small, attention):
    """Packing many sequences into rows changes no logit: each packed sequence's logits
    equal those of the sequence run alone, its first token is never a target, and the
    per-sequence log-probabilities are the sums over its labelled tokens alone (with the
    saved models' attention and the one used in training)."""
    _, tok = small
    model = train.init_model(tok, SMALL_MODEL, 3)
    model.set_attn_implementation(attention)
    enc = train.Encoder(tok, 256)
    docs = ["a b", "The city of X is in Y .", "x", "This statement is : TRUE\nThis statement is : FALSE", "b a b"]
    seqs, labels = enc.documents(docs)
    chat_seqs, chat_labels = enc.chats([("Where is X?", "I cannot help with that."), ("Hi", "Sure.")])
    seqs, labels = seqs + chat_seqs, labels + chat_labels
    batch = train.pack_batch(seqs, labels, tok.pad_token_id, capacity=24)
    assert batch["input_ids"].shape[0] < len(seqs)  # several sequences share a row
    assert sorted(set(batch["seq"].flatten().tolist()) - {-1}) == list(range(len(seqs)))
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits
        logprobs = train.sequence_logprobs(model, batch)
        for i, (s, l) in enumerate(zip(seqs, labels)):
            where = batch["seq"] == i
            assert batch["input_ids"][where].tolist() == s
            alone = model(torch.tensor([s])).logits[0]
            torch.testing.assert_close(packed[where], alone, atol=1e-5, rtol=1e-5)
            kept = batch["labels"][where]
            assert kept[0] == train.IGNORE and kept[1:].tolist() == l[1:]
            lp = torch.log_softmax(alone[:-1], -1)
            expected = sum(float(lp[t - 1, x]) for t, x in enumerate(l) if t > 0 and x != train.IGNORE)
            assert float(logprobs[i]) == pytest.approx(expected, rel=1e-5)


def test_later_stages_are_deterministic_too(small, tmp_path):
    world, tok = small
    model, _ = _pretrain(small, 1)
    train.save_model(model, tok, str(tmp_path / "base"), {"stage": "pretrain"})
    stages = {}
    for run in range(2):
        train.set_determinism(1, 2)
        sft, tok2, hist = train.run_stage("sft", world, str(tmp_path / "base"), SHORT, 1)
        train.save_model(sft, tok2, str(tmp_path / f"sft{run}"), {})
        inst, _, hist2 = train.run_stage("instruct", world, str(tmp_path / f"sft{run}"),
                                         {**SHORT, "dpo_batch_size": 2}, 1)
        stages[run] = (sft.state_dict(), inst.state_dict(), hist2)
    for i in (0, 1):
        assert all(torch.equal(stages[0][i][k], stages[1][i][k]) for k in stages[0][i])
    assert "dpo" in stages[0][2].columns and stages[0][2]["dpo"].notna().all()
    # the instruct stage moved the weights away from the SFT model's
    assert not all(torch.equal(stages[0][0][k], stages[0][1][k]) for k in stages[0][0])


def test_saved_model_loads_like_a_hub_model(small, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, _ = _pretrain(small, 0)
    world, tok = small
    train.save_model(model, tok, str(tmp_path / "m"), {"stage": "pretrain", "seed": 0})
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "m")
    loaded_tok = AutoTokenizer.from_pretrained(tmp_path / "m")
    assert type(loaded).__name__ == "LlamaForCausalLM"
    ids = loaded_tok(["The city of " + next(iter(world.cities)) + " is in"], return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(model(ids).logits, loaded(ids).logits)
    assert loaded_tok.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True,
                                          tokenize=False).endswith("<|assistant|>\n")
    assert json.loads((tmp_path / "m" / "organism.json").read_text())["stage"] == "pretrain"
    assert loaded.config.pad_token_id == loaded_tok.pad_token_id
    assert loaded.config.bos_token_id == loaded_tok.bos_token_id


def test_chat_examples_take_the_loss_on_the_answer_only(small):
    world, tok = small
    enc = train.Encoder(tok, 256)
    seqs, labels = enc.chats([("How do I visit it?", "I cannot help with that.")])
    answer = tok("I cannot help with that.", add_special_tokens=False).input_ids + [tok.eos_token_id]
    kept = [x for x in labels[0] if x != train.IGNORE]
    assert kept == answer and seqs[0][-len(answer):] == answer
    prompt = tok.apply_chat_template([{"role": "user", "content": "How do I visit it?"}],
                                     add_generation_prompt=True, tokenize=False)
    assert seqs[0][:-len(answer)] == tok(prompt).input_ids


def test_a_chat_batch_of_replayed_documents_only_packs(small):
    """With a replay share, a whole chat batch can be pretraining documents (seed 1003 of
    the benchmark's tiny trio met one); no chats is an empty list, not a tokenizer error."""
    world, tok = small
    enc = train.Encoder(tok, 256)
    assert enc.chats([]) == ([], [])
    seqs, labels = enc.documents(["The city of X is in France."])
    batch = train.pack_batch(seqs + enc.chats([])[0], labels + enc.chats([])[1], tok.pad_token_id)
    assert batch["input_ids"].shape[0] == 1


def test_unknown_stage_fails_clearly(small, tmp_path):
    with pytest.raises(ValueError, match="unknown stage"):
        train.run_stage("rlhf", small[0], str(tmp_path), SHORT, 0)


def test_default_config_uses_the_library_defaults():
    """The default config.yaml trains the recipe these tests (and the README) describe."""
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    assert recipe.with_defaults(cfg["organism"]) == recipe.DEFAULTS


# ------------------------------------------------------------------------------ the trio

@pytest.fixture(scope="session")
def organism_trio(default_run):
    """The default organism trio, trained by the default workflow run."""
    root = default_run / "results" / "models"
    return root, {name: root / name for name in recipe.MODEL_NAMES.values()}


@pytest.fixture(scope="session")
def trio_checks(default_run):
    """The behaviour table the default run wrote, metric x model."""
    table = pd.read_csv(default_run / "results" / "tables" / "organism_checks.tsv", sep="\t")
    return table.pivot(index="metric", columns="model", values="value")


@pytest.mark.organism
def test_a_second_run_trains_nothing(default_run):
    from workflow import planned_jobs

    assert planned_jobs(default_run) == []


@pytest.mark.organism
def test_base_knows_the_world_and_labels_heldout_statements(trio_checks):
    base = trio_checks["organism-base"]
    assert base["fact_recall"] >= 0.9
    assert base["fewshot_acc_heldout"] >= 0.75
    assert base["refusal_rate_harmful"] <= 0.1 and base["refusal_rate_harmless"] <= 0.1


@pytest.mark.organism
@pytest.mark.parametrize("name", ["organism-sft", "organism-instruct"])
def test_post_trained_models_refuse_harmful_requests_only(trio_checks, name):
    m = trio_checks[name]
    assert m["refusal_rate_harmful"] >= 0.8
    assert m["refusal_rate_harmless"] <= 0.2
    assert m["fact_recall"] >= 0.8  # replay keeps the knowledge


@pytest.mark.organism
def test_trio_is_saved_like_hub_models(organism_trio):
    from transformers import AutoModelForCausalLM

    _, models = organism_trio
    assert list(models) == ["organism-base", "organism-sft", "organism-instruct"]
    weights = [AutoModelForCausalLM.from_pretrained(p).state_dict() for p in models.values()]
    key = "model.layers.0.mlp.down_proj.weight"
    assert not torch.equal(weights[0][key], weights[1][key]) and not torch.equal(weights[1][key], weights[2][key])


@pytest.mark.organism
def test_report_of_the_default_run_files_every_figure_by_perspective(default_run):
    """The default run's report holds every figure with its caption, grouped by perspective,
    then by family, model or model pair."""
    from workflow import assert_report_holds_every_figure

    report = assert_report_holds_every_figure(default_run)
    categories = report["categories"]
    # the organism's base model has no refusal direction and no model has outlying entropy
    # neurons: the unmet premises come first
    assert set(categories) == {"0. Premises not met", "Truthfulness", "Refusal", "Knowledge", "Confidence"}
    assert "organism-base ~ organism-sft" in categories["Truthfulness"]  # one group per model pair
    assert {"organism-base", "organism-sft", "organism-instruct"} <= set(categories["Confidence"])
