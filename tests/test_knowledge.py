"""Knowledge patching: the pairing rule, token roles found from the tokenizer, and oracles from
the mathematics of patching (the last block at the last position carries the whole answer;
patching a run with itself changes nothing; cross-model patching of a model into itself is
single-model patching; the batched grid is the one-cell-at-a-time loop)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import ARCHS, DISCOVERED, make_tokenizer
from ptmech.adapter import load_model
from ptmech.knowledge import heatmaps, patching
from ptmech.knowledge.pairs import (PairsError, build_pairs, check_tokenization, match_by_last_word,
                                    prompt_tokens_sha256, skeletons_for)

CITIES = ["paris", "rome", "berlin"]
COUNTRIES = ["france", "italy", "germany"]
SKELETON = ["the city of {subject} is in {object}."]


def city_table():
    """Every (city, country) statement, with a made-up truth: city i is in country i."""
    rows = [(f"the city of {c} is in {k}.", int(i == j)) for i, c in enumerate(CITIES) for j, k in enumerate(COUNTRIES)]
    rows += [("the city of rome is not in france.", 1), ("paris is a city.", 1)]  # no skeleton match
    return [s for s, _ in rows], [y for _, y in rows]


def number_table():
    """Numbers written like the paper's: "seven-two" is three tokens, "seven" one."""
    words = ["seven-two", "three-four", "nine-one", "five-six", "seven", "three"]
    out = []
    for a in words:
        for b in words:
            if a != b:
                out.append((f"{a} is larger than {b}.", int(len(a) > len(b))))
    return [s for s, _ in out], [y for _, y in out]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run fastest on one thread (and leave the other cores to other tests)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tokenizer():
    return make_tokenizer()


@pytest.fixture(scope="module")
def adapter(tiny_model_dir):
    torch.manual_seed(0)
    return load_model("llama", {"path": str(tiny_model_dir("llama")), "dtype": "float32", "device": "cpu"})


@pytest.fixture(scope="module")
def city_pairs(tokenizer):
    statements, labels = city_table()
    return build_pairs(tokenizer, statements, labels, "st", SKELETON, n_true_demos=1, n_false_demos=1)


# ------------------------------------------------------------------------------ pairs


def test_last_word_matching_follows_the_paper():
    s = ["X.", "X.", "Y.", "X.", "X.", "Y.", "Z.", "Y.", "W."]
    trues, falses = [0, 2, 5, 7, 8], [1, 3, 4, 6]
    pairs, unmatched = match_by_last_word(trues, falses, s)
    # X has falses [1, 3, 4]: the last is taken and removed. Y has none: dropped.
    assert pairs == [(0, 4)] and unmatched == 4
    s2 = ["X."] * 5
    pairs, unmatched = match_by_last_word([0, 1, 2], [3, 4], s2)
    # two falses: the last is removed; then one left, which is reused by every later true
    assert pairs == [(0, 4), (1, 3), (2, 3)] and unmatched == 0
    pairs, unmatched = match_by_last_word([0, 1, 2], [3, 4], s2, reuse_unique_false=False)
    assert pairs == [(0, 4), (1, 3)] and unmatched == 1


def test_pairing_key(tokenizer):
    statements, labels = city_table()
    spaced = [s[:-1] + " ." for s in statements]  # "... france ." : the last word is "."
    skeleton = ["the city of {subject} is in {object} ."]
    by_word = build_pairs(tokenizer, spaced, labels, "st", skeleton)
    by_object = build_pairs(tokenizer, spaced, labels, "st", skeleton, pair_by="object")
    assert any(p["true"].split()[-2] != p["false"].split()[-2] for p in by_word["pairs"])
    assert all(p["true"].split()[-2] == p["false"].split()[-2] for p in by_object["pairs"])
    with pytest.raises(PairsError, match="pair_by"):
        build_pairs(tokenizer, spaced, labels, "st", skeleton, pair_by="subject")


def test_city_pairs_columns_and_prompts(city_pairs, tokenizer):
    doc = city_pairs
    assert [c["role"] for c in doc["columns"]] == ["the", "city", "of", "[s1]", "is", "in", "[o1]", ".",
                                                   "This", "statement", "is", ":"]
    groups = [c["group"] for c in doc["columns"]]
    assert groups[3] == "subject" and groups[6] == "object" and groups[-1] == "last"
    assert set(groups[:3] + groups[4:6] + groups[7:-1]) == {"other"}
    assert [c["part"] for c in doc["columns"]][7:] == ["statement", "suffix", "suffix", "suffix", "suffix"]
    assert doc["positions"] == list(range(-12, 0))
    assert doc["counts"]["match_skeleton"] == 9 and doc["counts"]["fit_template"] == 9
    assert doc["counts"]["pairs"] == 3  # each true statement finds a false one with its country
    T = len(doc["columns"])
    for p in doc["pairs"]:
        assert p["true"].split()[-1] == p["false"].split()[-1]  # same object
        assert p["true"] != p["false"]
        # demos: the same for both prompts, never the pair's own statements
        prefix_t = p["true_prompt"][: -len(p["true"]) - len(" This statement is:")]
        prefix_f = p["false_prompt"][: -len(p["false"]) - len(" This statement is:")]
        assert prefix_t == prefix_f and p["true"] not in prefix_t and p["false"] not in prefix_t
        assert prefix_t.count("TRUE") == 1 and prefix_t.count("FALSE") == 1
        t, f = p["true_ids"], p["false_ids"]
        assert t == tokenizer(p["true_prompt"])["input_ids"] and len(t) == len(f)
        diff = [j - len(t) for j in range(len(t)) if t[j] != f[j]]
        assert diff == [-T + 3]  # only the subject token differs


def test_multi_token_subjects_and_template_filter(tokenizer):
    statements, labels = number_table()
    doc = build_pairs(tokenizer, statements, labels, "larger", ["{subject} is larger than {object}."])
    roles = [c["role"] for c in doc["columns"]]
    assert roles == ["[s1]", "[s2]", "[s3]", "is", "larger", "than", "[o1]", "[o2]", "[o3]", ".",
                     "This", "statement", "is", ":"]
    # only the statements with two hyphenated (3-token) numbers fit the modal template
    assert doc["counts"]["fit_template"] == 4 * 3
    for p in doc["pairs"]:
        assert "-" in p["true"].split()[0] and "-" in p["false"].split()[0]


def test_demonstrations_are_seeded(tokenizer):
    statements, labels = city_table()
    a = build_pairs(tokenizer, statements, labels, "st", SKELETON, seed=3)
    b = build_pairs(tokenizer, statements, labels, "st", SKELETON, seed=3)
    assert [p["false_prompt"] for p in a["pairs"]] == [p["false_prompt"] for p in b["pairs"]]
    prompts = {p["false_prompt"] for s in range(6)
               for p in build_pairs(tokenizer, statements, labels, "st", SKELETON, seed=s)["pairs"]}
    assert len(prompts) > 3


def test_max_pairs_and_missing_skeleton(tokenizer):
    statements, labels = city_table()
    assert build_pairs(tokenizer, statements, labels, "st", SKELETON, max_pairs=2)["counts"]["pairs"] == 2
    with pytest.raises(PairsError, match="knowledge.skeletons.mystery"):
        skeletons_for("mystery", {})
    assert skeletons_for("cities", {}) == ["The city of {subject} is in {object}."]
    with pytest.raises(PairsError, match="no statement matches"):
        build_pairs(tokenizer, statements, labels, "st", ["The town of {subject} is in {object}."])
    with pytest.raises(PairsError, match="exactly once"):
        build_pairs(tokenizer, statements, labels, "st", ["the city of {subject} is in france."])


def test_completion_pairs(tokenizer):
    statements, labels = city_table()
    doc = build_pairs(tokenizer, statements, labels, "st", SKELETON, query_mode="completion", n_true_demos=2)
    assert doc["query"] == "completion"
    assert [c["role"] for c in doc["columns"]] == ["the", "city", "of", "[s1]", "is", "in"]
    assert [c["group"] for c in doc["columns"]] == ["other"] * 3 + ["subject", "other", "last"]
    true_statements = {s for s, y in zip(statements, labels) if y == 1}
    for p in doc["pairs"]:
        *demos, last = p["false_prompt"].split("\n")
        assert last == p["false"].rsplit(" ", 1)[0]  # cut before the object
        assert len(demos) == 2 and set(demos) <= true_statements - {p["true"]}
        assert p["true_prompt"].split("\n")[:-1] == demos
        t, f = p["true_ids"], p["false_ids"]
        assert [j - len(t) for j in range(len(t)) if t[j] != f[j]] == [-3]  # only [s1]
    with pytest.raises(PairsError, match="subject before the object"):
        build_pairs(tokenizer, ["in france is paris."], [1], "x", ["in {object} is {subject}."], query_mode="completion")


def test_other_tokenizer_is_refused(city_pairs):
    other = make_tokenizer()
    other.add_tokens(["the city"])  # tokenises the prompts differently
    doc = {**city_pairs, "family": "f", "tokenizer_model": "a"}
    check_tokenization(make_tokenizer(), doc, "b")
    with pytest.raises(PairsError, match="model 'c' tokenises the true prompt of pair 0 of f/st differently from 'a'"):
        check_tokenization(other, doc, "c")


def test_answer_ids(tokenizer):
    assert patching.answer_ids(tokenizer) == (tokenizer.convert_tokens_to_ids("TRUE"),
                                              tokenizer.convert_tokens_to_ids("FALSE"))

    class Split:  # " TRUE" -> [" T", "RUE"], " FALSE" -> [" F", "ALSE"]
        name_or_path = "split"
        pieces = {" TRUE": [1, 2], " FALSE": [3, 4]}

        def __call__(self, text, add_special_tokens=True):
            return {"input_ids": self.pieces[text]}

        def convert_ids_to_tokens(self, ids):
            return [str(i) for i in ids]

    # the default scores what the model predicts next: the first token of each answer
    assert patching.answer_ids(Split()) == (1, 3) == patching.answer_ids(Split(), "first")
    assert patching.answer_ids(Split(), "last") == (2, 4)
    with pytest.raises(ValueError, match=r"' TRUE' is 2 tokens \['1', '2'\], not one; set multi_token_answers"):
        patching.answer_ids(Split(), "error")

    class SharedFirst(Split):  # " TRUE" -> [" ", "TRUE"], " FALSE" -> [" ", "FALSE"]
        pieces = {" TRUE": [9, 2], " FALSE": [9, 4]}

    with pytest.raises(ValueError, match=r"the first tokens of ' TRUE' and ' FALSE' are the same token \['9'\]"):
        patching.answer_ids(SharedFirst())
    assert patching.answer_ids(SharedFirst(), "last") == (2, 4)


# ------------------------------------------------------------------------------ oracles


def _answers(adapter=None):
    # the prompts' ids come from the conftest tokenizer (some architectures' tokenizer
    # classes reload it differently), so the answers do too
    return patching.answer_ids(make_tokenizer())


def _true_acts(adapter, pairs, T, answers=None):
    acts, lds = {}, {}
    for idx, a, logits in patching.true_runs(adapter, [p["true_ids"] for p in pairs], T, batch_size=2):
        for b, i in enumerate(idx):
            acts[int(i)] = a[b].float()
            lds[int(i)] = float(patching.logit_diff(logits[b:b + 1], answers or _answers())[0])
    return acts, lds


def test_last_block_last_position_reproduces_the_true_run(adapter, city_pairs):
    pairs, T = city_pairs["pairs"], len(city_pairs["columns"])
    answers = _answers(adapter)
    acts, true_ld = _true_acts(adapter, pairs, T)
    clean_true = patching.clean_logit_diffs(adapter, [p["true_ids"] for p in pairs], answers)
    clean_false = patching.clean_logit_diffs(adapter, [p["false_ids"] for p in pairs], answers)
    for i, p in enumerate(pairs):
        grid = patching.patch_grid(adapter, p["false_ids"], acts[i], answers, batch_size=16)
        assert grid.shape == (T, adapter.n_layers)
        np.testing.assert_allclose(grid[-1, -1], clean_true[i], atol=1e-5)
        np.testing.assert_allclose(true_ld[i], clean_true[i], atol=1e-5)
        # the subject column differs, so patching it at block 0 moves the answer
        assert not np.isclose(grid[3, 0], clean_false[i], atol=1e-6)
        # patching a position whose token is the same in both prompts at block 0 changes nothing
        np.testing.assert_allclose(grid[0, 0], clean_false[i], atol=1e-5)


def test_patching_a_run_with_its_own_activations_changes_nothing(adapter, city_pairs):
    pairs, T = city_pairs["pairs"], len(city_pairs["columns"])
    answers = _answers(adapter)
    for p in pairs:
        _, own, logits = next(patching.true_runs(adapter, [p["false_ids"]], T))
        ld = float(patching.logit_diff(logits, answers)[0])
        grid = patching.patch_grid(adapter, p["false_ids"], own[0], answers, batch_size=7)
        np.testing.assert_allclose(grid.numpy(), np.full((T, adapter.n_layers), ld), atol=1e-5)


@pytest.mark.parametrize("arch", ARCHS + DISCOVERED)
def test_batched_grid_equals_one_cell_at_a_time(arch, tiny_model_dir, city_pairs):
    model = load_model(arch, {"path": str(tiny_model_dir(arch)), "dtype": "float32", "device": "cpu"})
    pairs, T = city_pairs["pairs"], len(city_pairs["columns"])
    answers = _answers(model)
    acts, _ = _true_acts(model, pairs[:1], T)
    loop = patching.patch_grid_loop(model, pairs[0]["false_ids"], acts[0], answers)
    # small chunks (later positions, higher blocks: prefix cache and skipped blocks); one chunk
    for batch_size, reuse in ((5, True), (64, False)):
        grid = patching.patch_grid(model, pairs[0]["false_ids"], acts[0], answers, batch_size=batch_size,
                                   reuse_clean_run=reuse)
        torch.testing.assert_close(grid, loop, atol=2e-5, rtol=1e-4)
    assert loop.std() > 0  # the grid is not trivially constant
    assert not any("forward" in block.__dict__ for block in model.blocks)  # skipped blocks restored


@pytest.mark.parametrize("arch", ARCHS + DISCOVERED)
def test_pairs_sharing_passes_equal_one_cell_at_a_time(arch, tiny_model_dir, city_pairs):
    """``patch_pairs`` runs the grids of pairs of one false-prompt length in shared passes
    (``patch_grids``), each pair with its own activations and answers; a pair of another
    length gets its own group. Every grid equals the per-cell loop."""
    model = load_model(arch, {"path": str(tiny_model_dir(arch)), "dtype": "float32", "device": "cpu"})
    pairs, T = city_pairs["pairs"][:3], len(city_pairs["columns"])
    acts, _ = _true_acts(model, pairs, T)
    S = len(pairs[0]["false_ids"])

    def with_length(ids, n):  # any token sequence will do for the oracle
        return list(ids[-n:]) if len(ids) >= n else list(pairs[0]["false_ids"][:n - len(ids)]) + list(ids)

    twin = dict(pairs[1], false_ids=with_length(pairs[1]["false_ids"], S))
    other = dict(pairs[2], false_ids=with_length(pairs[2]["false_ids"], S + 1))
    pairs = [pairs[0], other, twin]
    acts = [acts[0], acts[2], acts[1]]
    answers = [_answers(model), _answers(model)[::-1], _answers(model)]
    groups = patching.pair_groups(pairs, batch_size=2 * patching.MIN_TILE)
    assert groups == [[0, 2], [1]]
    grids = patching.patch_pairs(model, pairs, acts.__getitem__, answers, batch_size=2 * patching.MIN_TILE,
                                 log=lambda s: None)
    for i, p in enumerate(pairs):
        loop = patching.patch_grid_loop(model, p["false_ids"], acts[i], answers[i])
        torch.testing.assert_close(torch.as_tensor(grids[i]), loop, atol=2e-5, rtol=1e-4)
    assert not np.allclose(grids[0], grids[2])  # the pairs differ


@pytest.mark.parametrize("T,L,B", [(12, 3, 5), (14, 32, 128), (12, 12, 32), (3, 4, 100), (5, 7, 1)])
def test_grid_chunks_cover_every_cell_once(T, L, B):
    chunks = patching.grid_chunks(T, L, B)
    cells = [c for chunk in chunks for c in chunk]
    assert sorted(cells) == [(j, l) for j in range(T) for l in range(L)]
    assert all(0 < len(chunk) <= B for chunk in chunks)
    if T * L <= B:
        assert len(chunks) == 1


def test_cross_model_into_itself_equals_single_model(adapter, city_pairs, tmp_path, monkeypatch):
    pairs, T = city_pairs["pairs"], len(city_pairs["columns"])
    answers = _answers(adapter)
    single = patching.single_model_patching(adapter, pairs, T, answers, batch_size=9, log=lambda s: None)
    path = tmp_path / "src.h5"
    sha = prompt_tokens_sha256(pairs, answers)
    patching.write_sources(adapter, pairs, path, n_positions=T, answers=answers, batch_size=2,
                           storage_dtype="auto", attrs={"family": "f", "prompt_tokens_sha256": sha},
                           log=lambda s: None)

    def no_loading(*a, **k):
        raise AssertionError("cross-model patching must not load the source model")

    import transformers

    monkeypatch.setattr("ptmech.adapter.load_model", no_loading)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", no_loading)
    with patching.Sources(path, expect={"family": "f", "prompt_tokens_sha256": sha, "n_layers": adapter.n_layers}) as src:
        assert src.attrs["storage_dtype"] == "float32"  # lossless for a float32 model
        cross = patching.patch_pairs(adapter, pairs, src.true_resid, answers, batch_size=9, log=lambda s: None)
        np.testing.assert_allclose(src.false_ld, patching.clean_logit_diffs(adapter, [p["false_ids"] for p in pairs], answers), atol=1e-5)
    np.testing.assert_allclose(cross, single, atol=1e-6)
    assert single.shape == (len(pairs), T, adapter.n_layers)


def test_completion_queries_patching_oracles(adapter, tokenizer, tmp_path):
    statements, labels = city_table()
    doc = build_pairs(tokenizer, statements, labels, "st", SKELETON, query_mode="completion", n_true_demos=1)
    pairs, T = doc["pairs"], len(doc["columns"])
    single = patching.single_model_patching(adapter, pairs, T, None, batch_size=5, log=lambda s: None)
    true_top = patching.top_tokens(adapter, [p["true_ids"] for p in pairs])
    false_top = patching.top_tokens(adapter, [p["false_ids"] for p in pairs])
    answers = patching.completion_answers(true_top, false_top)
    true_ld = patching.clean_logit_diffs(adapter, [p["true_ids"] for p in pairs], answers)
    false_ld = patching.clean_logit_diffs(adapter, [p["false_ids"] for p in pairs], answers)
    np.testing.assert_allclose(single[:, -1, -1], true_ld, atol=1e-5)  # the last cell is the true run
    np.testing.assert_allclose(single[:, 0, 0], false_ld, atol=1e-5)   # "the" at block 0 changes nothing
    path = tmp_path / "src.h5"
    patching.write_sources(adapter, pairs, path, n_positions=T, answers=None, storage_dtype="float32",
                           log=lambda s: None)
    with patching.Sources(path) as src:
        np.testing.assert_array_equal(src.true_top, true_top)
        np.testing.assert_allclose(src.true_ld, true_ld, atol=1e-5)
        cross = patching.patch_pairs(adapter, pairs, src.true_resid, patching.completion_answers(src.true_top, false_top),
                                     batch_size=64, log=lambda s: None)
    np.testing.assert_allclose(cross, single, atol=1e-6)


def test_sources_from_another_tokenizer_or_family_are_refused(adapter, city_pairs, tmp_path):
    pairs, T = city_pairs["pairs"][:1], len(city_pairs["columns"])
    answers = _answers(adapter)
    path = tmp_path / "src.h5"
    patching.write_sources(adapter, pairs, path, n_positions=T, answers=answers, storage_dtype="float16",
                           attrs={"family": "f", "prompt_tokens_sha256": "abc"}, log=lambda s: None)
    with pytest.raises(patching.PatchingError, match="prompt_tokens_sha256 is 'abc', expected 'xyz' \\(patching a into b\\)"):
        patching.Sources(path, expect={"prompt_tokens_sha256": "xyz"}, what=" (patching a into b)")
    with pytest.raises(patching.PatchingError, match="family is 'f', expected 'g'"):
        patching.Sources(path, expect={"family": "g"})
    truncated = tmp_path / "cut.h5"
    truncated.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(patching.PatchingError, match="cut.h5"):
        patching.Sources(truncated)
    L = adapter.n_layers
    with pytest.raises(patching.PatchingError, match=f"source activations have {L + 1} blocks"):
        patching.patch_grid(adapter, pairs[0]["false_ids"], torch.zeros(L + 1, T, adapter.d_model), answers)


# ------------------------------------------------------------------------------ heatmaps


def test_binned_normalisation():
    m = np.linspace(-3.0, 7.0, 101).reshape(1, -1)
    b = heatmaps.binned(m)
    assert set(np.round(np.unique(b), 6)) <= {round(0.1 * i, 6) for i in range(11)}
    assert b[0, 0] == 0 and b[0, -1] == 1.0
    assert (b[m < 2.0 - 1e-3] == 0).all()  # the lower half of the range is 0
    assert (b[m > 2.0 + 0.5 + 1e-3] > 0).all() and np.isclose(b[0, 51], 0.1)
    assert (np.diff(b[0]) >= 0).all()


def test_group_statistics_and_comparisons():
    x = np.zeros((3, 4))
    y = np.zeros((3, 4))
    y[1, 0], y[2, 3] = 0.5, -0.25
    y[0, 1] = 0.1
    stats = {s["group"]: s for s in heatmaps.group_statistics(x, y, ["subject", "object", "other", "last"])}
    assert stats["all"]["max_abs_diff"] == 0.5 and stats["subject"]["max_abs_diff"] == 0.5
    assert stats["object"]["max_abs_diff"] == 0.1 and stats["last"]["max_abs_diff"] == 0.25
    assert stats["other"]["max_abs_diff"] == 0 and np.isnan(stats["all"]["pearson_r"])
    assert np.isclose(heatmaps.group_statistics(y, 2 * y + 1, ["subject"] * 4)[0]["pearson_r"], 1.0)

    models = {"b": {"family": "f", "role": "base"}, "s": {"family": "f", "role": "sft"},
              "i": {"family": "f", "role": "instruct"}, "o": {"family": "g", "role": "base"}}
    everything = {(a, c) for a in "bsi" for c in "bsi"}
    comps = heatmaps.comparisons(models, everything)
    assert len(comps) == 6
    assert {(c["comparison"], c["x_source"], c["x_target"], c["y_source"], c["y_target"]) for c in comps if c["post"] == "i"} == {
        ("base_vs_post", "b", "b", "i", "i"), ("base_to_post_vs_post", "b", "i", "i", "i"),
        ("post_to_base_vs_base", "i", "b", "b", "b")}
    assert len(heatmaps.comparisons(models, everything - {("b", "s")})) == 5


def test_tidy_heatmap_and_difference_table():
    rng = np.random.default_rng(0)
    cols = [{"role": r, "group": g} for r, g in [("[s1]", "subject"), ("is", "other"), ("[o1]", "object"), (":", "last")]]
    ld = {("b", "b"): rng.normal(size=(5, 4, 3)), ("p", "p"): rng.normal(size=(5, 4, 3))}
    ld[("b", "p")] = ld[("p", "p")].copy()
    frames = []
    for (s, t), x in ld.items():
        frames.append(heatmaps.tidy_heatmap(x, cols).assign(source=s, target=t, dataset="d", family="f"))
    table = pd.concat(frames)
    one = table[(table.source == "b") & (table.target == "b")]
    assert len(one) == 12 and set(one.k) == {1, 2, 3}
    np.testing.assert_allclose(heatmaps.matrix(one, "mean_ld"), ld[("b", "b")].mean(0).T)
    row = one[(one.k == 3) & (one.column == 0)].iloc[0]
    assert row.position == -4 and row.role == "[s1]" and row.group == "subject"
    models = {"b": {"family": "f", "role": "base"}, "p": {"family": "f", "role": "instruct"}}
    d = heatmaps.difference_table(table, models)
    assert set(d.comparison) == {"base_vs_post", "base_to_post_vs_post"}  # no p -> b heatmap
    same = d[(d.comparison == "base_to_post_vs_post")]
    assert (same.max_abs_diff == 0).all()
    raw = d[(d.comparison == "base_vs_post") & (d.scale == "raw") & (d.group == "all")].iloc[0]
    diff = ld[("b", "b")].mean(0) - ld[("p", "p")].mean(0)
    assert np.isclose(raw.max_abs_diff, np.abs(diff).max())


# ------------------------------------------------------------------------------ cache-only steps


def test_tables_and_figures_load_no_model(tmp_path, monkeypatch):
    """The aggregate scripts read only patching results: they run here with a fake
    ``snakemake`` object while every way of loading a model or tokenizer raises."""
    import logging
    import runpy
    from types import SimpleNamespace

    import transformers

    from conftest import REPO
    from ptmech import adapter as adapter_mod
    from ptmech import logs
    from ptmech.config import schema_defaults

    def refuse(*args, **kwargs):
        raise AssertionError("a cache-only step tried to load a model or tokenizer")

    monkeypatch.setattr(adapter_mod, "load_model", refuse)
    for cls in (transformers.AutoModelForCausalLM, transformers.AutoTokenizer, transformers.AutoConfig):
        monkeypatch.setattr(cls, "from_pretrained", refuse)
    monkeypatch.setattr(logs, "to_file", lambda path: logging.getLogger("ptmech.test"))

    cols = [{"role": r, "part": p, "group": g} for r, p, g in
            [("[s1]", "subject", "subject"), ("is", "statement", "other"), ("[o1]", "object", "object"),
             (".", "statement", "other"), (":", "suffix", "last")]]
    rng = np.random.default_rng(1)
    models = {"b": {"family": "f", "role": "base"}, "p": {"family": "f", "role": "instruct"}}
    paths = []
    for s, t in [("b", "b"), ("p", "p"), ("b", "p"), ("p", "b")]:
        path = tmp_path / "patching" / s / t / "d.h5"
        P = 4
        arrays = {name: rng.normal(size=P) for name in ("target_true_ld", "target_false_ld", "source_true_ld", "source_false_ld")}
        direction = "single" if s == t else ("forward" if s == "b" else "backward")
        patching.write_patching(path, rng.normal(size=(P, 5, 3)), arrays, {
            "source": s, "target": t, "dataset": "d", "family": "f", "direction": direction, "columns": cols,
            "positions": list(range(-5, 0)), "n_pairs": P})
        paths.append(str(path))
    out = {k: str(tmp_path / f"{k}.tsv") for k in ("heatmaps", "differences", "baselines")}

    def run(name, **parts):
        snakemake = SimpleNamespace(**{k: SimpleNamespace(**v) if isinstance(v, dict) else v for k, v in parts.items()})
        snakemake.log = ["unused.log"]
        runpy.run_path(str(REPO / "workflow_scripts" / name), init_globals={"snakemake": snakemake}, run_name="__main__")

    premises = schema_defaults(str(REPO / "config.schema.yaml"), "premises")
    run("knowledge/tables.py", input={"patching": paths}, output=out,
        params={"models": models, "settings": {"bins": 20}, "premises": premises})
    figs = {k: str(tmp_path / f"{k}.png") for k in ("heatmaps", "raw", "differences")}
    run("knowledge/figures.py", input={"heatmaps": out["heatmaps"], "differences": out["differences"]}, output=figs,
        params={"models": ["b", "p"]}, wildcards={"family": "f", "dataset": "d"})
    heat = pd.read_csv(out["heatmaps"], sep="\t", keep_default_na=False)
    assert len(heat) == 4 * 5 * 3 and list(heat.role[:5]) == ["[s1]", "is", "[o1]", ".", ":"]
    assert set(pd.read_csv(out["differences"], sep="\t").comparison) == set(heatmaps.COMPARISONS)
    assert all(Path(f).stat().st_size > 10_000 for f in figs.values())
