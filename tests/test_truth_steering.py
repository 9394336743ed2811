"""Oracle tests of truth steering (ptmech.truth.steering) on tiny random models: a zero
vector reproduces the baseline exactly, the vector lands exactly on the statement's last
two tokens whatever the padding, and a large multiple of a direction the unembedding reads
drives P(TRUE) - P(FALSE) to -1 on true statements and +1 on false ones."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from ptmech.adapter import load_model
from ptmech.fewshot import SUFFIX, answer_token_ids
from ptmech.residual import hooked
from ptmech.truth import steering as st

PLACES = [("paris", "france"), ("rome", "italy"), ("berlin", "germany")]
NUMBERS = "one two three four".split()


def statements() -> pd.DataFrame:
    rows = []
    for city, country in PLACES:
        for _, other in PLACES:
            for n in NUMBERS[: 1 + len(city) % 3]:  # varied lengths, so left padding matters
                rows.append((f"the city of {city} {n} is in {other} .", int(country == other)))
    return pd.DataFrame(rows, columns=["statement", "label"])


def _adapter(tiny_model_dir, arch="llama"):
    return load_model(arch, {"path": str(tiny_model_dir(arch)), "dtype": "float32", "device": "cpu"})


def _prompts(adapter, table, n_demos=4, limit=None):
    demos = st.choose_demos(table, n_demos, seed=1)
    rows = st.select_statements(table, demos, limit)
    queries = st.few_shot_queries(rows["statement"], rows.index, demos, seed=1)
    ids, suffix = st.encode_queries(adapter, queries)
    labels = rows["label"].to_numpy()
    return rows, demos, ids, suffix, labels, st.signs_for(labels)


def test_demos_never_include_the_evaluated_statement():
    table = statements()
    demos = st.choose_demos(table, 4, seed=1)
    assert sorted(y for _, y in demos) == [0, 0, 1, 1]
    rows = st.select_statements(table, demos)
    shown = {s for s, _ in demos}
    assert len(rows) == len(table) - 4 and not shown & set(rows["statement"])
    for q, s in zip(st.few_shot_queries(rows["statement"], rows.index, demos), rows["statement"]):
        lines = q.split("\n")
        assert lines[-1] == s + SUFFIX and all(not line.startswith(s + SUFFIX + " ") for line in lines[:-1])
        assert sorted(lines[:-1]) == sorted(f"{d}{SUFFIX} {'TRUE' if y else 'FALSE'}" for d, y in demos)
    limited = st.select_statements(table, demos, limit=6)
    assert len(limited) == 6 and limited["label"].sum() == 3


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_zero_vector_reproduces_the_baseline_exactly(arch, tiny_model_dir):
    adapter = _adapter(tiny_model_dir, arch)
    _, _, ids, suffix, _, signs = _prompts(adapter, statements())
    base = st.p_true_false(adapter, ids, suffix, signs, batch_size=4)
    zero = st.p_true_false(adapter, ids, suffix, signs, vector=np.zeros(adapter.d_model),
                           ks=range(1, adapter.n_layers + 1), offsets=[0, -1], batch_size=4)
    np.testing.assert_array_equal(zero, base)
    # (random, not constant: LayerNorm would remove a constant vector)
    some = st.p_true_false(adapter, ids, suffix, signs, vector=np.random.default_rng(0).normal(size=adapter.d_model),
                           ks=[1], offsets=[0, -1], batch_size=4)
    assert np.abs(some - base).max() > 1e-6  # so the equality above can fail


def test_the_vector_lands_on_the_statement_last_two_tokens(tiny_model_dir):
    adapter = _adapter(tiny_model_dir)
    _, _, ids, suffix, _, signs = _prompts(adapter, statements())
    tok = adapter.tokenizer
    period, statement_ids = tok.convert_tokens_to_ids("."), set(tok(" ".join(c + " " + y for c, y in PLACES))["input_ids"])
    for x, s in zip(ids, suffix):
        assert x[-(s + 1)] == period and x[-(s + 2)] in statement_ids
        assert len(tok(SUFFIX, add_special_tokens=False)["input_ids"]) == s

    seen = []

    def record(module, args, kwargs):  # the input of block 1 = the output of block 0 = k 1
        seen.append((args[0] if args else kwargs["hidden_states"]).clone())

    vector = np.random.default_rng(0).normal(size=adapter.d_model)
    for v in (None, vector):
        with hooked([(adapter.blocks[1], "pre", record)]):
            st.p_true_false(adapter, ids, suffix, signs, vector=v, ks=[1], offsets=[0, -1],
                            coefficient=2.0, batch_size=len(ids))
    n_groups = len(seen) // 2
    for base, steered in zip(seen[:n_groups], seen[n_groups:]):
        diff = (steered - base).numpy()
        s = suffix[0]
        touched = np.abs(diff).sum(-1) > 0
        assert touched[:, -(s + 1)].all() and touched[:, -(s + 2)].all() and touched.sum() == 2 * len(diff)
        sign = np.sign(diff[:, -(s + 1)] @ vector)
        np.testing.assert_allclose(diff[:, -(s + 1)], sign[:, None] * 2 * vector[None], rtol=1e-4, atol=1e-4)


def _reading_model(tiny_model_dir, alpha=3.0):
    """A tiny model whose unembedding reads one unit direction u: the " TRUE" row is
    alpha * u, the " FALSE" row -alpha * u, and the final norm's gain is 1."""
    adapter = _adapter(tiny_model_dir)
    t_id, f_id = answer_token_ids(adapter.tokenizer)
    u = torch.randn(adapter.d_model, generator=torch.Generator().manual_seed(0))
    u /= u.norm()
    with torch.no_grad():
        adapter.final_norm.weight.fill_(1.0)
        adapter.unembed_weight[t_id] = alpha * u
        adapter.unembed_weight[f_id] = -alpha * u
    return adapter, u.numpy()


def test_a_large_multiple_drives_p_diff_to_minus_one_on_true_and_plus_one_on_false(tiny_model_dir):
    adapter, u = _reading_model(tiny_model_dir)
    _, _, ids, suffix, labels, signs = _prompts(adapter, statements())
    # the last residual k = L (the last block's output) at the query's last token (offset =
    # suffix length) is what the unembedding reads: subtracting u on true statements must
    # push them to FALSE
    kw = dict(ks=[adapter.n_layers], offsets=[suffix[0]], batch_size=8)
    base = st.p_true_false(adapter, ids, suffix, signs, batch_size=8)
    small = st.p_true_false(adapter, ids, suffix, signs, vector=u, coefficient=0.01, **kw)
    large = st.p_true_false(adapter, ids, suffix, signs, vector=u, coefficient=1e4, **kw)
    p_diff = lambda p: p[:, 0] - p[:, 1]
    assert np.abs(p_diff(base)).max() < 0.9  # the baseline is not already saturated
    assert (p_diff(large)[labels == 1] < -0.99).all() and (p_diff(large)[labels == 0] > 0.99).all()
    scores = st.steering_scores(labels, p_diff(base), p_diff(large)).set_index("subset")
    for subset in ("true_to_false", "false_to_true"):  # every statement answered right at baseline flips
        assert scores.loc[subset, "n_flippable"] == 0 or scores.loc[subset, "flip_rate"] == 1.0
    assert scores.loc["true_to_false", "score"] > 0.99 and scores.loc["false_to_true", "score"] > 0.99
    # monotone in the coefficient: a small multiple moves each statement the intended way, less far
    moved = p_diff(small) - p_diff(base)
    assert (moved[labels == 1] < 0).all() and (moved[labels == 0] > 0).all()
    assert (np.abs(moved) < np.abs(p_diff(large) - p_diff(base))).all()


def test_offsets_past_the_query_end_and_wrong_widths_are_errors(tiny_model_dir):
    adapter = _adapter(tiny_model_dir)
    _, _, ids, suffix, _, signs = _prompts(adapter, statements())
    with pytest.raises(st.SteeringError, match="reach past"):
        st.p_true_false(adapter, ids, suffix, signs, vector=np.zeros(adapter.d_model), ks=[1],
                        offsets=[suffix[0] + 1])
    with pytest.raises(st.SteeringError, match="width"):
        st.p_true_false(adapter, ids, suffix, signs, vector=np.zeros(3), ks=[1])
    for k in (0, adapter.n_layers + 1):  # the embedding output is no block's output; past the last block
        with pytest.raises(st.SteeringError, match="outside the block outputs"):
            st.p_true_false(adapter, ids, suffix, signs, vector=np.zeros(adapter.d_model), ks=[k])
