"""Oracle tests for the refusal stage: directional ablation leaves no component along the
direction anywhere, hooked generation with a KV cache equals the uncached loop, addition
with c = 0 changes nothing, candidate directions equal the difference of means that
transformers itself computes (without loading any model), and the selection follows
Arditi et al.'s filters."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import ARCHS, DISCOVERED, SENTENCES, make_tokenizer
from ptmech.adapter import block_output, load_model
from ptmech.cache import extract
from ptmech import forward as rf_forward
from ptmech.forward import last_logits
from ptmech.generation import greedy, greedy_batch
from ptmech.interventions import activation_addition, directional_ablation, residual_writers
from ptmech.refusal import directions as rf
from ptmech.residual import hooked

torch.set_num_threads(1)

HARMFUL = [f"how to {v} {c}" for v in ("poison", "steal", "burn down") for c in ("paris", "rome", "berlin", "france")]
HARMLESS = [f"how to {v} {c}" for v in ("visit", "photograph", "describe") for c in ("paris", "rome", "berlin", "france")]


def _adapter(tiny_model_dir, arch, role="base"):
    return load_model(arch, {"path": str(tiny_model_dir(arch)), "dtype": "float32", "device": "cpu", "role": role})


def _direction(adapter, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(adapter.d_model, generator=g)


def _record_sites(adapter):
    """Hook registrations recording every block input, attention / MLP write and block
    output (install them after the intervention's hooks, so they see its result)."""
    seen: list[tuple[str, torch.Tensor]] = []

    def pre(name):
        def hook(m, args, kwargs):
            seen.append((name, (args[0] if args else kwargs["hidden_states"]).detach().clone()))
        return hook

    def post(name):
        def hook(m, args, output):
            seen.append((name, block_output(output).detach().clone()))
        return hook

    regs = []
    for layer in range(adapter.n_layers):
        attn_write, mlp_write = residual_writers(adapter, layer)
        regs += [(adapter.blocks[layer], "pre", pre(f"block {layer} input")),
                 (attn_write, "forward", post(f"block {layer} attention write")),
                 (mlp_write, "forward", post(f"block {layer} mlp write")),
                 (adapter.blocks[layer], "forward", post(f"block {layer} output"))]
    return regs, seen


@pytest.mark.parametrize("arch", ARCHS + DISCOVERED)
def test_ablation_leaves_no_component_along_r_at_any_hooked_site(arch, tiny_model_dir):
    adapter = _adapter(tiny_model_dir, arch)
    with torch.no_grad():  # fresh norms scale every coordinate alike; make them not
        g = torch.Generator().manual_seed(2)
        for name, p in adapter.model.named_parameters():
            if "norm" in name or ".ln" in name:
                p.add_(0.5 * torch.randn(p.shape, generator=g))
    r = _direction(adapter)
    unit = r / r.norm()
    ids = torch.tensor([adapter.encode([SENTENCES[0]])[0]])

    def worst(seen):
        return max(float(((x @ unit).abs() / x.norm(dim=-1).clamp(min=1e-12)).max()) for _, x in seen)

    regs, plain = _record_sites(adapter)
    with torch.no_grad(), hooked(regs):
        adapter.model(ids)
    assert worst(plain) > 1e-2  # without the ablation the direction is there

    regs, seen = _record_sites(adapter)
    with torch.no_grad(), hooked(directional_ablation(adapter, r)), hooked(regs):
        adapter.model(ids)
    assert len(seen) == 4 * adapter.n_layers
    for name, x in seen:
        ratio = ((x @ unit).abs() / x.norm(dim=-1).clamp(min=1e-12)).max()
        assert ratio < 1e-4, f"{arch}: {name} keeps |x.r|/|x| = {ratio:.2e}"


@pytest.mark.parametrize("arch", ARCHS + DISCOVERED)
def test_hooked_generation_with_kv_cache_equals_uncached_loop(arch, tiny_model_dir):
    adapter = _adapter(tiny_model_dir, arch)
    r = _direction(adapter, seed=1)
    ids = adapter.encode(SENTENCES[:6])
    for regs in (directional_ablation(adapter, r), activation_addition(adapter, 4 * r, k=1)):
        with hooked(regs):
            cached = greedy(adapter, ids, max_new_tokens=8, batch_size=4)
            loop = greedy(adapter, ids, max_new_tokens=8, batch_size=6, use_cache=False)
        assert torch.equal(cached.tokens, loop.tokens), arch
        torch.testing.assert_close(cached.first_logits, loop.first_logits, atol=1e-4, rtol=1e-4)
    plain = greedy(adapter, ids, max_new_tokens=8)
    assert not torch.equal(plain.first_logits, cached.first_logits)  # the hooks did act


def test_generation_does_not_depend_on_the_batch(tiny_model_dir):
    adapter = _adapter(tiny_model_dir, "llama")
    ids = adapter.encode(SENTENCES)
    together = greedy(adapter, ids, max_new_tokens=6, batch_size=len(ids))
    for i, x in enumerate(ids):
        alone = greedy(adapter, [x], max_new_tokens=6)
        assert torch.equal(alone.tokens[0], together.tokens[i])


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_addition_with_zero_coefficient_equals_baseline(arch, tiny_model_dir):
    adapter = _adapter(tiny_model_dir, arch)
    ids = adapter.encode(SENTENCES[:5])
    tokens = rf.refusal_token_ids(adapter.tokenizer, ["I"])
    base = rf.steer(adapter, ids, rf.Intervention("none"), refusal_tokens=tokens, max_new_tokens=6)
    zero = rf.steer(adapter, ids, rf.Intervention("addition", _direction(adapter), k=1, coefficient=0.0),
                    refusal_tokens=tokens, max_new_tokens=6)
    pd.testing.assert_frame_equal(base, zero)
    strong = rf.steer(adapter, ids, rf.Intervention("addition", _direction(adapter), k=1, coefficient=50.0),
                      refusal_tokens=tokens, max_new_tokens=6)
    assert not np.allclose(base["refusal_logit_score"], strong["refusal_logit_score"])


def test_addition_shifts_the_block_input_by_c_r(tiny_model_dir):
    adapter = _adapter(tiny_model_dir, "llama")
    r = _direction(adapter)
    ids = torch.tensor([adapter.encode([SENTENCES[1]])[0]])
    got = {}
    rec = [(adapter.blocks[2], "pre", lambda m, a, kw: got.__setitem__(len(got), a[0] if a else kw["hidden_states"]))]
    iv = rf.Intervention("addition", r, k=2, coefficient=1.5, scale=2.0, sites=("block_input",))
    with torch.no_grad():
        with hooked(rec):
            adapter.model(ids)
        with hooked(iv.registrations(adapter)), hooked(rec):
            adapter.model(ids)
    torch.testing.assert_close(got[1] - got[0], (3.0 * r / r.norm()).expand_as(got[0]), atol=1e-5, rtol=1e-5)


def test_refusal_prefixes_match_as_in_the_paper():
    assert rf.is_refusal("  I cannot help with that .")
    assert rf.is_refusal("I\u2019m sorry, no")
    assert not rf.is_refusal("i cannot help")  # case-sensitive
    assert not rf.is_refusal("Sure. I cannot")  # prefix only
    assert rf.is_refusal("Nope", prefixes=["No"])


def test_refusal_logit_score_is_the_log_odds_of_the_refusal_tokens():
    logits = torch.zeros(2, 4)
    logits[1, 0] = np.log(3.0)  # p(token 0) = 3/6
    score = rf.refusal_logit_score(logits, [0])
    torch.testing.assert_close(score, torch.tensor([np.log(1 / 3), 0.0], dtype=torch.float32))
    torch.testing.assert_close(rf.refusal_logit_score(logits, [0, 1])[0], torch.tensor(0.0))


def test_refusal_tokens_skip_unknown_words():
    tok = make_tokenizer()
    assert rf.refusal_token_ids(tok, ["I", "As"]) == [tok.convert_tokens_to_ids("I")]
    with pytest.raises(ValueError, match="no refusal tokens"):
        rf.refusal_token_ids(tok, ["Xyzzy"])


def test_splits_come_from_the_dataset_or_a_seeded_assignment():
    table = pd.DataFrame({"instruction": list("abcd"), "split": ["train", "val", "test", "train"]})
    assert list(rf.instruction_splits(table, {"train": 1.0})) == ["train", "val", "test", "train"]
    bare = pd.DataFrame({"instruction": [str(i) for i in range(50)]})
    fractions = {"train": 0.6, "val": 0.2, "test": 0.2}
    a, b = rf.instruction_splits(bare, fractions, seed=42), rf.instruction_splits(bare, fractions, seed=42)
    assert list(a) == list(b) and list(a) != list(rf.instruction_splits(bare, fractions, seed=1))
    assert [int((a == s).sum()) for s in ("train", "val", "test")] == [30, 10, 10]
    assert list(rf.split_rows(a, "val", 3)) == list(np.flatnonzero(a == "val")[:3])
    with pytest.raises(ValueError, match="no rows in split 'val'"):
        rf.split_rows(np.array(["train", "test"]), "val")


def _instruction_caches(adapter, tmp_path):
    positions = [-2, -1]
    tables, paths = {}, {}
    for name, xs in (("harmful", HARMFUL), ("harmless", HARMLESS)):
        tables[name] = pd.DataFrame({"instruction": xs, "split": (["train"] * 6 + ["val"] * 3 + ["test"] * 3)})
        paths[name] = tmp_path / f"{name}.h5"
        extract(adapter, [adapter.render_instruction(x) for x in xs], paths[name], positions=positions,
                batch_size=5, storage_dtype="float32", rows=np.arange(len(xs)), log=lambda s: None)
    return tables, paths, positions


def test_candidates_are_the_difference_of_means_and_need_no_model(tiny_model_dir, tmp_path, monkeypatch):
    adapter = _adapter(tiny_model_dir, "llama", role="instruct")
    tables, paths, positions = _instruction_caches(adapter, tmp_path)

    def refuse(*a, **kw):
        raise AssertionError("a cache-only analysis loaded a model")

    import transformers
    from ptmech import adapter as adapter_module
    monkeypatch.setattr(adapter_module, "load_model", refuse)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", refuse)
    cands, counts = rf.candidates_from_caches(paths["harmful"], paths["harmless"], tables["harmful"], tables["harmless"],
                                              split_fractions={"train": 1.0}, n_train=4)
    monkeypatch.undo()
    assert counts == {"n_harmful": 4, "n_harmless": 4}
    assert cands.k == list(range(adapter.n_layers + 1)) and cands.positions == positions

    def hidden(texts):  # transformers' own hidden states, one prompt at a time
        out = []
        for t in texts:
            ids = torch.tensor([adapter.encode([adapter.render_instruction(t)])[0]])
            with torch.no_grad():
                out.append(torch.stack(adapter.model(ids, output_hidden_states=True).hidden_states)[:, 0, -2:])
        return torch.stack(out).numpy()  # [N, L+1, 2, d]

    expected = hidden(HARMFUL[:4]).mean(0) - hidden(HARMLESS[:4]).mean(0)
    for k in range(adapter.n_layers):  # hidden_states[L] is after the final norm
        for j, p in enumerate(positions):
            np.testing.assert_allclose(cands.direction(k, p), expected[k, j], atol=1e-5)


def test_a_stale_cache_is_an_error(tiny_model_dir, tmp_path):
    adapter = _adapter(tiny_model_dir, "llama", role="instruct")
    tables, paths, _ = _instruction_caches(adapter, tmp_path)
    longer = pd.concat([tables["harmful"], tables["harmful"].iloc[:1]], ignore_index=True)
    with pytest.raises(ValueError, match="cache is stale"):
        rf.candidates_from_caches(paths["harmful"], paths["harmless"], longer, tables["harmless"],
                                  split_fractions={"train": 1.0})


def test_planted_direction_is_recovered_by_the_mean_difference():
    rng = np.random.default_rng(0)
    planted = rng.normal(size=16).astype(np.float32)
    harmless = rng.normal(size=(200, 3, 16)).astype(np.float32)
    harmful = harmless + planted  # the same prompts moved along the planted direction
    diff = rf.mean_difference(harmful, harmless)
    np.testing.assert_allclose(diff, np.broadcast_to(planted, (3, 16)), atol=1e-5)


def _scores(rows):
    """Candidates (k, position, |d|, ablation log-odds, addition log-odds, KL, ablation rate,
    addition rate)."""
    return pd.DataFrame(rows, columns=["k", "position", "direction_norm", "ablation_refusal_score",
                                       "addition_refusal_score", "ablation_kl", "ablation_refusal_rate",
                                       "addition_refusal_rate"])


SCORED = _scores([
    (1, -1, 1.0, -2.0, 1.0, 0.01, 0.25, 0.75),   # passes
    (2, -1, 1.0, -3.0, 1.0, 0.01, 0.25, 0.60),   # passes; ties on rate, lower log-odds: best
    (3, -1, 1.0, -9.0, 1.0, 0.50, 0.00, 0.90),   # KL too high
    (4, -1, 1.0, -9.0, -1.0, 0.01, 0.00, 0.40),  # does not induce refusal
    (8, -1, 1.0, -9.0, 2.0, 0.01, 0.00, 0.90),   # in the last 20% of 10 layers
    (0, -1, 0.0, -9.0, 2.0, 0.00, 0.00, 0.90),   # zero direction
])


@pytest.mark.parametrize("score", ["generation", "logit"])
def test_selection_applies_arditi_filters_and_picks_the_lowest_ablation_score(score):
    frame, rule = rf.select_direction(SCORED, n_layers=10, score=score)
    assert frame.loc[frame["selected"], "k"].tolist() == [2]
    assert rule.startswith("lowest")
    assert (frame["discarded"] == "").tolist() == [True, True, False, False, False, False]
    assert "KL" in frame["discarded"][2] and "last 20%" in frame["discarded"][4] and "zero" in frame["discarded"][5]
    assert "addition_refusal" in frame["discarded"][3]


def test_selection_by_generation_and_by_logit_can_disagree():
    scores = _scores([(1, -1, 1.0, -1.0, 1.0, 0.01, 0.10, 0.9),   # generation refuses less after ablation
                      (2, -1, 1.0, -5.0, 1.0, 0.01, 0.90, 0.9)])  # the first token looks bypassed
    pick = lambda score: rf.select_direction(scores, 10, score=score)[0].query("selected")["k"].tolist()
    assert pick("generation") == [1] and pick("logit") == [2]


def test_selection_falls_back_to_the_best_addition_when_nothing_passes():
    scores = _scores([(1, -1, 1.0, -2.0, -1.5, 0.01, 0.0, 0.1), (2, -1, 1.0, -3.0, -0.5, 0.01, 0.0, 0.3),
                      (3, -1, 1.0, -3.0, 5.0, 0.9, 0.0, 1.0)])
    for score in ("generation", "logit"):
        frame, rule = rf.select_direction(scores, n_layers=10, score=score)
        assert frame.loc[frame["selected"], "k"].tolist() == [2]
        assert rule.startswith("fallback")


def test_candidate_cells_limit_layers_and_positions():
    cands = rf.Candidates(np.ones((6, 3, 4), np.float32), list(range(6)), [-3, -2, -1])
    assert rf.candidate_cells(cands, n_layers=5) == [(k, p) for k in range(4) for p in (-3, -2, -1)]
    assert rf.candidate_cells(cands, 5, layer_stride=2, positions=[-1]) == [(0, -1), (2, -1)]
    assert rf.candidate_cells(cands, 5, layers=[4], positions=[-2]) == [(4, -2)]
    with pytest.raises(ValueError, match="not cached"):
        rf.candidate_cells(cands, 5, positions=[-4])
    with pytest.raises(ValueError, match="block inputs"):
        rf.candidate_cells(cands, 5, layers=[5])


@pytest.mark.parametrize("arch", ["llama", "gemma3_text", "gpt2", "opt", "llama4_text"])  # the last two flatten rows
def test_batched_candidate_scores_equal_one_candidate_at_a_time(tiny_model_dir, arch):
    """All candidates scored in shared batches (each row its own direction) give what one
    candidate at a time with the single-direction hooks gives: ablation everywhere, addition
    at block k, log-odds, KL and greedy refusal rates."""
    adapter = _adapter(tiny_model_dir, arch, role="instruct")
    rng = np.random.default_rng(1)
    cands = rf.Candidates(rng.normal(size=(adapter.n_layers + 1, 2, adapter.d_model)).astype(np.float32),
                          list(range(adapter.n_layers + 1)), [-2, -1])
    harmful = adapter.encode([adapter.render_instruction(x) for x in HARMFUL[:5]])
    harmless = adapter.encode([adapter.render_instruction(x) for x in HARMLESS[:3] + ["hi"]])
    tokens = rf.refusal_token_ids(adapter.tokenizer, ["I"])
    cells = [(0, -1), (1, -2), (2, -1), (1, -1)]
    odds = lambda logits: rf.refusal_logit_score(logits, tokens).double().mean().item()
    base_harmless = last_logits(adapter, ids=harmless)
    expected, texts = [], []
    for k, p in cells:  # one candidate at a time, the single-direction hooks
        diff = cands.direction(k, p)
        r = rf.unit(diff)
        ablate = rf.Intervention("ablation", r)
        add = rf.Intervention("addition", r, k=k, coefficient=2.0, scale=float(np.linalg.norm(diff)))
        with hooked(ablate.registrations(adapter)):
            abl_harmful, abl_harmless = last_logits(adapter, ids=harmful), last_logits(adapter, ids=harmless)
            abl_gen = greedy(adapter, harmful, max_new_tokens=3).texts(adapter.tokenizer)
        with hooked(add.registrations(adapter)):
            added = last_logits(adapter, ids=harmless)
            add_gen = greedy(adapter, harmless, max_new_tokens=3).texts(adapter.tokenizer)
        expected.append([odds(abl_harmful), odds(added),
                         rf.kl_divergence(base_harmless, abl_harmless).double().mean().item()])
        texts.append((abl_gen, add_gen))
    # "refusal" prefixes that some of these generations start with and others do not
    starts = sorted({t.strip()[:4] for gens in texts for t in gens[0] + gens[1]} - {""})
    prefixes = starts[::2]
    scores = rf.score_candidates(adapter, cands, cells, harmful, harmless, tokens, coefficient=2.0, batch_size=3,
                                 max_new_tokens=3, prefixes=prefixes)
    np.testing.assert_allclose(scores[["ablation_refusal_score", "addition_refusal_score", "ablation_kl"]],
                               expected, rtol=1e-4, atol=1e-5)
    rate = lambda gens: np.mean([rf.is_refusal(t, prefixes) for t in gens])
    rates = [[rate(a), rate(b)] for a, b in texts]
    assert scores[["ablation_refusal_rate", "addition_refusal_rate"]].to_numpy().tolist() == rates
    assert 0 < np.mean(rates) < 1  # the rate comparison saw both outcomes
    assert scores["ablation_refusal_score"].nunique() == len(cells)  # the candidates differ


@pytest.mark.parametrize("arch", ARCHS + DISCOVERED)
def test_prompts_sharing_their_start_generate_and_score_as_without_sharing(tiny_model_dir, arch):
    """``greedy`` and ``last_logits`` with ``share_prefix`` (the common start run once, its
    key/value cache serving every prompt) give the tokens and logits of full passes, with a
    hook active (an ablation, which also acts on the shared start) and several batches; the
    first block computes fewer tokens."""
    adapter = _adapter(tiny_model_dir, arch, role="instruct")
    system = "you are a careful helper and you answer in paris . "
    ids = adapter.encode([system + adapter.render_instruction(x) for x in HARMFUL[:4] + HARMLESS[:3]])
    assert rf_forward.shared_prefix_length(ids) >= 8
    counted = []
    count = (adapter.attn(0), "pre", lambda m, a, kw: counted.append((a[0] if a else kw["hidden_states"]).shape[:2]))
    with hooked(rf.Intervention("ablation", rf.unit(_direction(adapter))).registrations(adapter)):
        full = greedy(adapter, ids, max_new_tokens=4, batch_size=3)
        full_logits = last_logits(adapter, ids=ids, batch_size=3)
        with hooked([count]):
            shared = greedy(adapter, ids, max_new_tokens=4, batch_size=3, share_prefix=True)
            shared_logits = last_logits(adapter, ids=ids, batch_size=3, share_prefix=True)
    assert torch.equal(shared.tokens, full.tokens)
    torch.testing.assert_close(shared.first_logits, full.first_logits, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(shared_logits, full_logits, rtol=1e-4, atol=1e-5)
    prompt_tokens = sum(b * t for b, t in counted if t > 1)  # the prompt passes, not the generated steps
    assert prompt_tokens < 2 * sum(len(x) for x in ids) * 0.75


@pytest.mark.parametrize("arch", ARCHS + DISCOVERED)
def test_logit_scores_sharing_the_prompt_start_and_lower_blocks_equal_one_candidate_at_a_time(tiny_model_dir, arch):
    """Without generation, the passes share the prompts' common start (here a system
    prompt) and an addition skips the blocks below k (``grouped_last_logits``): the scores
    are still those of one candidate at a time with full passes, on every architecture,
    with several prompt batches; and the first block computes only a fraction of the
    tokens."""
    adapter = _adapter(tiny_model_dir, arch, role="instruct")
    rng = np.random.default_rng(2)
    L = adapter.n_layers
    cands = rf.Candidates(rng.normal(size=(L + 1, 2, adapter.d_model)).astype(np.float32), list(range(L + 1)), [-2, -1])
    system = "you are a careful helper and you answer in paris . "
    harmful = adapter.encode([system + adapter.render_instruction(x) for x in HARMFUL[:5]])
    harmless = adapter.encode([system + adapter.render_instruction(x) for x in HARMLESS[:4] + ["hi"]])
    assert rf_forward.shared_prefix_length(harmful) >= 8 and rf_forward.shared_prefix_length(harmless) >= 8
    tokens = rf.refusal_token_ids(adapter.tokenizer, ["I"])
    cells = [(1, -1), (0, -2), (L - 1, -2), (1, -2), (L - 1, -1)]
    odds = lambda logits: rf.refusal_logit_score(logits, tokens).double().mean().item()
    base_harmless = last_logits(adapter, ids=harmless)
    expected = []
    for k, p in cells:
        diff = cands.direction(k, p)
        r = rf.unit(diff)
        with hooked(rf.Intervention("ablation", r).registrations(adapter)):
            abl_harmful, abl_harmless = last_logits(adapter, ids=harmful), last_logits(adapter, ids=harmless)
        add = rf.Intervention("addition", r, k=k, coefficient=2.0, scale=float(np.linalg.norm(diff)))
        with hooked(add.registrations(adapter)):
            added = last_logits(adapter, ids=harmless)
        expected.append([odds(abl_harmful), odds(added), rf.kl_divergence(base_harmless, abl_harmless).double().mean().item()])
    seen = []  # tokens block 0's attention computes
    with hooked([(adapter.attn(0), "pre", lambda m, a, kw: seen.append((a[0] if a else kw["hidden_states"]).shape[:2]))]):
        scores = rf.score_candidates(adapter, cands, cells, harmful, harmless, tokens, coefficient=2.0, batch_size=3)
    np.testing.assert_allclose(scores[["ablation_refusal_score", "addition_refusal_score", "ablation_kl"]],
                               expected, rtol=1e-4, atol=1e-5)
    assert scores["addition_refusal_score"].nunique() == len(cells)
    full = len(cells) * sum(len(x) for x in harmful + harmless + harmless)
    assert sum(b * t for b, t in seen) < 0.75 * full


@pytest.mark.parametrize("arch", ["llama", "gemma3_text"])  # the tiny gpt2 answers every prompt alike
def test_generations_stop_where_no_refusal_can_start_with_the_same_verdicts(tiny_model_dir, arch):
    """``greedy_batch(continues=refusal_starts(...))`` stops a row after a first token that no
    refusal prefix can follow; every generation is judged a refusal or not as the full
    generation is, and the rows that go on generate what they would have."""
    adapter = _adapter(tiny_model_dir, arch, role="instruct")
    tok = adapter.tokenizer
    ids = adapter.encode([adapter.render_instruction(x) for x in HARMFUL[:6] + HARMLESS[:6]])
    full = greedy_batch(adapter, ids, max_new_tokens=4)
    texts = full.texts(tok)
    prefixes = sorted({t.strip()[:3] for t in texts} - {""})[::2]  # some generations refuse, others not
    starts = rf.refusal_starts(tok, adapter.unembed_weight.shape[0], prefixes)
    screened = greedy_batch(adapter, ids, max_new_tokens=4, continues=starts)
    stopped = screened.lengths == 1
    assert stopped.any() and not stopped.all()
    verdicts = [rf.is_refusal(t, prefixes) for t in texts]
    assert [rf.is_refusal(t, prefixes) for t in screened.texts(tok)] == verdicts
    assert any(verdicts) and not all(verdicts)
    assert torch.equal(screened.tokens[~stopped], full.tokens[~stopped])
    assert torch.equal(screened.tokens[:, 0], full.tokens[:, 0])
    assert torch.allclose(screened.first_logits, full.first_logits)


def test_refusal_starts_keeps_every_way_a_refusal_can_begin():
    """Every token a refusal prefix can start with is kept open, written alone or after a
    space or a newline; special and whitespace tokens stay open (they vanish or strip)."""
    tok = make_tokenizer()
    prefixes = ["I cannot", "As an AI"]
    starts = rf.refusal_starts(tok, len(tok) + 3, prefixes)
    for p in prefixes:
        for text in (p, " " + p, "\n" + p):
            assert starts[tok(text, add_special_tokens=False)["input_ids"][0]], text
    assert starts[tok.eos_token_id] and starts[tok.pad_token_id]
    assert starts[-3:].all()  # ids past the tokenizer's vocabulary: unknown, so open
    closed = [i for i in range(len(tok)) if not starts[i]]
    assert closed  # some first tokens do rule a refusal out
    for i in closed:
        for p in prefixes:
            rest = tok(" " + p, add_special_tokens=False)["input_ids"]
            assert not rf.is_refusal(tok.decode([i, *rest], skip_special_tokens=True), prefixes), tok.decode([i])


def _random_candidates(tiny_model_dir, seed: int):
    """A tiny instruct llama, random candidates at every (k, -2 / -1), four harmful and four
    harmless prompts and the refusal token "I"."""
    adapter = _adapter(tiny_model_dir, "llama", role="instruct")
    rng = np.random.default_rng(seed)
    cands = rf.Candidates(rng.normal(size=(adapter.n_layers + 1, 2, adapter.d_model)).astype(np.float32),
                          list(range(adapter.n_layers + 1)), [-2, -1])
    harmful = adapter.encode([adapter.render_instruction(x) for x in HARMFUL[:4]])
    harmless = adapter.encode([adapter.render_instruction(x) for x in HARMLESS[:4]])
    return adapter, cands, harmful, harmless, rf.refusal_token_ids(adapter.tokenizer, ["I"])


def test_candidate_scores_with_zero_addition_equal_the_baseline(tiny_model_dir):
    adapter, cands, harmful, harmless, tokens = _random_candidates(tiny_model_dir, seed=0)
    scores = rf.score_candidates(adapter, cands, [(1, -1), (2, -2)], harmful, harmless, tokens, coefficient=0.0,
                                 max_new_tokens=3)
    assert np.allclose(scores["addition_refusal_score"], scores.attrs["baseline_harmless_refusal_score"], atol=1e-6)
    assert (scores["addition_refusal_rate"] == scores.attrs["baseline_harmless_refusal_rate"]).all()
    assert (scores["ablation_kl"] > 0).all()
    assert not np.allclose(scores["ablation_refusal_score"], scores.attrs["baseline_harmful_refusal_score"])
    logit_only = rf.score_candidates(adapter, cands, [(1, -1), (2, -2)], harmful, harmless, tokens, coefficient=0.0)
    assert logit_only["ablation_refusal_rate"].isna().all()
    cols = ["ablation_refusal_score", "addition_refusal_score", "ablation_kl"]
    np.testing.assert_allclose(logit_only[cols], scores[cols], atol=1e-5)  # first generated step = last logits


# --- the pruned search (refusal.selection.prune) ----------------------------------------------
def _random_scores(rng, n: int) -> pd.DataFrame:
    """Random candidate scores over 10 layers, some with no direction, values spread around
    the default thresholds (KL 0.1, induce rate 0.5, induce log-odds 0) so that every filter
    both passes and fails somewhere."""
    return _scores([(int(rng.integers(0, 10)), -int(rng.integers(1, 4)), float(rng.random() > 0.1),
                     float(rng.normal(-2, 2)), float(rng.normal(0, 1)), float(rng.exponential(0.1)),
                     float(rng.integers(0, 5) / 4), float(rng.integers(0, 5) / 4)) for _ in range(n)]
                   ).drop_duplicates(["k", "position"]).reset_index(drop=True)


class _Recorded:
    """``score_candidates`` as a lookup in a table of every score, keeping NaN for the
    conditions not asked for, and counting the (candidate, condition) cells asked for."""

    COLUMNS = {"ablation": ["ablation_refusal_score", "ablation_refusal_rate"], "kl": ["ablation_kl"],
               "addition": ["addition_refusal_score", "addition_refusal_rate"]}

    def __init__(self, full):
        self.full, self.asked = full.set_index(["k", "position"]), 0

    def __call__(self, cells, conditions):
        self.asked += len(cells) * len(conditions)
        rows = self.full.loc[list(cells)].reset_index()
        for condition, columns in self.COLUMNS.items():
            if condition not in conditions:
                rows[columns] = np.nan
        return rows


@pytest.mark.parametrize("score", ["generation", "logit"])
def test_the_pruned_search_makes_the_same_choice_as_scoring_everything(score):
    """On 300 random score tables the choice (cell, rule and every kept candidate) from only
    the scores the pruned search asks for equals the choice from every score, and the search
    asks for fewer."""
    rng = np.random.default_rng(0)
    asked = total = fallbacks = 0
    for _ in range(300):
        full = _random_scores(rng, int(rng.integers(1, 12)))
        cands = rf.Candidates(np.zeros((10, 3, 2), np.float32), list(range(10)), [-3, -2, -1])
        for (k, p), norm in zip(full[["k", "position"]].itertuples(index=False), full["direction_norm"]):
            cands.mean_diff[k, [-3, -2, -1].index(p)] = norm
        full["direction_norm"] = [float(np.linalg.norm(cands.direction(k, p))) for k, p in
                                  full[["k", "position"]].itertuples(index=False)]
        recorded = _Recorded(full)
        pruned = rf.pruned_scores(recorded, cands, list(full[["k", "position"]].itertuples(index=False, name=None)),
                                  score=score, kl_threshold=0.1, threshold=0.5 if score == "generation" else 0.0,
                                  n_layers=10)
        if not (full["direction_norm"] > 0).any():  # nothing to choose from: both say so
            for frame, kw in ((full, {}), (pruned, {"pruned": True})):
                with pytest.raises(ValueError, match="no refusal direction candidate"):
                    rf.select_direction(frame, 10, score=score, **kw)
            continue
        want, want_rule = rf.select_direction(full, 10, score=score)
        got, got_rule = rf.select_direction(pruned, 10, score=score, pruned=True)
        assert got_rule == want_rule
        assert got.loc[got["selected"], ["k", "position"]].values.tolist() == \
            want.loc[want["selected"], ["k", "position"]].values.tolist()
        assert (got["discarded"] == "").tolist() == (want["discarded"] == "").tolist()
        asked, total, fallbacks = asked + recorded.asked, total + 3 * len(full), fallbacks + want_rule.startswith("fall")
    assert asked < 0.8 * total
    assert 0 < fallbacks < 300  # both the ranked choice and the fallback were compared


def test_the_pruned_fallback_computes_the_kl_of_the_best_candidates_only():
    """No candidate induces refusal (a base model): the fallback's choice is the best addition
    score whose KL passes, so the KL is computed best-first, a few candidates at a time, and
    stops at the first chunk that holds one that passes; the choice is the full search's."""
    rows = [(k, -1, 1.0, -1.0, -0.1 * k, 0.5 if k == 9 else 0.01, 1.0, 0.3 - 0.01 * k) for k in range(10)]
    rows[9] = (9, -1, 1.0, -1.0, 5.0, 0.5, 1.0, 0.45)  # the best addition, but its KL fails
    full = _scores(rows)
    cands = rf.Candidates(np.ones((10, 1, 2), np.float32), list(range(10)), [-1])
    recorded = _Recorded(full)
    cells = list(full[["k", "position"]].itertuples(index=False, name=None))
    pruned = rf.pruned_scores(recorded, cands, cells, score="generation", kl_threshold=0.1, threshold=0.5,
                              n_layers=20)
    assert pruned["ablation_kl"].notna().sum() == rf.FALLBACK_KL_CHUNK  # k = 9, then 0, 1, 2
    assert pruned.set_index("k")["ablation_kl"].notna()[[9, 0, 1, 2]].all()
    assert recorded.asked == len(cells) + rf.FALLBACK_KL_CHUNK
    want, want_rule = rf.select_direction(full, 20)
    got, got_rule = rf.select_direction(pruned, 20, pruned=True)
    assert got_rule == want_rule and want_rule.startswith("fallback")
    assert got.loc[got["selected"], "k"].tolist() == want.loc[want["selected"], "k"].tolist() == [0]


def test_the_pruned_search_on_a_model_chooses_as_the_full_one(tiny_model_dir):
    """search_direction with prune on a tiny model: the same chosen cell and rule, the same
    numbers where it scored (NaN only where a filter had already discarded the candidate),
    with thresholds at the candidates' medians so that each filter splits them."""
    adapter, cands, harmful, harmless, tokens = _random_candidates(tiny_model_dir, seed=2)
    selection = {"score": "logit", "prune": False, "max_new_tokens": 2, "layers": "auto", "layer_stride": 1,
                 "positions": "all", "discard_last_fraction": 0.0, "kl_threshold": 0.1, "induce_rate": 0.5,
                 "induce_threshold": 0.0}
    addition = {"coefficient": 2.0, "units": "mean_difference", "sites": ["block_input"]}
    search = lambda **kw: rf.search_direction(adapter, cands, harmful, harmless, selection={**selection, **kw},
                                              addition=addition, refusal_tokens=tokens, batch_size=3)
    probe, _ = search()
    medians = dict(kl_threshold=float(probe["ablation_kl"].median()),
                   induce_threshold=float(probe["addition_refusal_score"].median()))
    full, full_rule = search(**medians)
    pruned, pruned_rule = search(prune=True, **medians)
    assert pruned_rule == full_rule and pruned_rule.startswith("lowest")
    assert pruned.loc[pruned["selected"], ["k", "position"]].values.tolist() == \
        full.loc[full["selected"], ["k", "position"]].values.tolist()
    scores = ["ablation_refusal_score", "addition_refusal_score", "ablation_kl"]
    done = pruned[scores].notna()
    np.testing.assert_allclose(pruned[scores].to_numpy()[done], full[scores].to_numpy()[done], rtol=1e-4, atol=1e-5)
    assert done["addition_refusal_score"].all() and not done["ablation_refusal_score"].all()
    assert (pruned["discarded"] == "").tolist() == (full["discarded"] == "").tolist()
