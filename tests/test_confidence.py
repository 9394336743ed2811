"""Oracle tests for the confidence stage (entropy neurons, METHODS.md §6): the chunked
LogitVar equals a one-shot computation written out here; a neuron planted where the
centred unembedding maps it to constant logits is selected, and under ablation acts only
through the final norm's scale; the ablation's total effect equals a full forward pass
with the neuron ablated, its direct effect equals the frozen-scale formula."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import ARCHS, DISCOVERED, MIXTURES_OF_EXPERTS, SENTENCES, save_tiny_model
from ptmech.adapter import block_output, load_model
from ptmech.confidence import neurons as cf
from ptmech.residual import hooked

# one architecture per MLP / norm kind: gated down_proj + RMSNorm, GPT-2 Conv1D + LayerNorm
# (tied unembedding), GPT-NeoX dense_4h_to_h + LayerNorm
KINDS = ["llama", "gpt2", "gpt_neox"]


def _adapter(folder, name="m"):
    return load_model(name, {"path": str(folder), "dtype": "float32", "device": "cpu"})


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    """A function arch -> a freshly loaded tiny model of its own (tests may edit weights)."""
    root = tmp_path_factory.mktemp("confidence_models")

    def get(arch: str, seed: int = 0):
        folder = root / f"{arch}-{seed}"
        if not folder.exists():
            save_tiny_model(arch, folder, seed=seed)
        return _adapter(folder, arch)

    return get


def reference_logit_var(adapter, centre_vocab: bool = True) -> np.ndarray:
    """LogitVar the obvious way, in float64, with the whole [d_mlp, V] cosine matrix:
    TransformerLens default processing (fold the final norm gain into W_U; for LayerNorm
    models centre W_out rows and W_U columns over d_model; centre W_U over the vocabulary),
    then the unbiased variance over the vocabulary of the cosines."""
    layernorm = isinstance(adapter.final_norm, torch.nn.LayerNorm)
    w = adapter.mlp_out_rows(-1).detach().double()                         # [d_mlp, d]
    u = (adapter.unembed_weight.detach().double() * adapter.final_norm_gain().detach().double()).T  # [d, V]
    if layernorm:
        w = w - w.mean(1, keepdim=True)
        u = u - u.mean(0, keepdim=True)
    if centre_vocab:
        u = u - u.mean(1, keepdim=True)
    cos = (w / w.norm(dim=1, keepdim=True)) @ (u / u.norm(dim=0, keepdim=True))
    return cos.var(dim=1).numpy()


def randomise_gain(adapter, seed=1):
    """A non-uniform final-norm gain (tiny random models start at ones), so that folding
    it into the unembedding matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        adapter.final_norm.weight.copy_(0.5 + torch.rand(adapter.d_model, generator=g))


def plant_entropy_neuron(adapter, neuron: int, size: float = 12.0, alpha: float = 3.0, seed: int = 2):
    """Make last-layer ``neuron`` an ideal entropy neuron: an output row ``w`` (centred over
    d_model, norm ``size`` x the largest other row norm) such that the gain-folded unembedding
    maps it to the same logit for every token (``W_U (g * w) = c 1``, with ``c != 0``, so only
    the vocabulary centring makes those logits cancel). Returns ``w``."""
    g = adapter.final_norm_gain().detach()
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(adapter.d_model, generator=gen) / g
    z = z - z.mean()                                  # w is centred: LayerNorm leaves it alone
    q = g * z                                          # what the gain makes of w
    qn = q / q.norm()
    with torch.no_grad():
        wu = adapter.unembed_weight
        # remove q from every unembedding row, then give every row the same component along q
        wu.copy_(wu - (wu @ qn)[:, None] * qn[None, :] + alpha * qn[None, :])
        rows = adapter.mlp_out_rows(-1)
        w = z / z.norm() * size * rows.norm(dim=1).max()
        rows[neuron] = w
    return w


# ------------------------------------------------------------------------- from weights

@pytest.mark.parametrize("arch", KINDS)
def test_chunked_logit_var_equals_one_shot(arch, fresh):
    adapter = fresh(arch)
    randomise_gain(adapter)
    expected = reference_logit_var(adapter)
    V = adapter.unembed_weight.shape[0]
    for chunk in (1, 7, V - 1, V, 10 * V):
        got = cf.model_neuron_statistics(adapter, chunk_size=chunk)["logit_var"].to_numpy()
        np.testing.assert_allclose(got, expected, rtol=2e-5, atol=0)
    # the one-shot centred unembedding of the library is the same U
    layernorm = arch != "llama"
    u = cf.centred_unembedding(adapter.unembed_weight, adapter.final_norm_gain(), layernorm).double()
    np.testing.assert_allclose(u.sum(1).numpy(), 0, atol=1e-4)           # centred over the vocabulary
    if layernorm:
        np.testing.assert_allclose(u.sum(0).numpy(), 0, atol=1e-4)       # and over d_model


@pytest.mark.parametrize("arch", KINDS)
def test_norm_is_the_output_row_norm(arch, fresh):
    adapter = fresh(arch)
    rows = adapter.mlp_out_rows(-1).detach().double()
    if arch != "llama":
        rows = rows - rows.mean(1, keepdim=True)
    stats = cf.model_neuron_statistics(adapter)
    assert len(stats) == rows.shape[0] == adapter.mlp_out_rows(-1).shape[0]
    np.testing.assert_allclose(stats["norm"], rows.norm(dim=1).numpy(), rtol=1e-6)


@pytest.mark.parametrize("arch", KINDS)
def test_planted_entropy_neuron_is_selected(arch, fresh):
    adapter = fresh(arch)
    randomise_gain(adapter)
    planted = 5
    plant_entropy_neuron(adapter, planted)
    stats = cf.model_neuron_statistics(adapter, chunk_size=13)
    var = stats["logit_var"].to_numpy()
    assert var[planted] < 1e-10 < np.delete(var, planted).min()
    assert cf.entropy_neurons(stats["norm"], var, 0.25, 1).tolist() == [planted]
    chosen = cf.entropy_neurons(stats["norm"], var, 0.25, 10)
    assert chosen[0] == planted and len(chosen) == 10
    # the test can fail: without centring over the vocabulary the planted row's logits are
    # not cancelled (constant c != 0, cosines c / (|w| |u_v|) vary with the column norms)
    assert reference_logit_var(adapter, centre_vocab=False)[planted] > 1e-7


def test_statistics_use_weights_only(fresh, monkeypatch):
    adapter = fresh("llama")

    def no_text(*a, **k):
        raise AssertionError("the model was run on text")

    for module in (adapter.model, adapter.backbone, *adapter.blocks):
        monkeypatch.setattr(module, "forward", no_text)
    stats = cf.model_neuron_statistics(adapter)
    assert np.isfinite(stats[["norm", "logit_var"]].to_numpy()).all()


# ------------------------------------------------------------------------------ selection

def test_selection_rule():
    norm = np.array([1.0, 9.0, 8.0, 7.0, 2.0, 6.0, 3.0, 5.0])
    var = np.array([0.0, 0.3, 0.1, 0.2, 0.0, 0.05, 0.0, 0.1])
    # top 0.5 by norm, strictly above the 0.5 quantile (4.5 with linear interpolation)
    assert cf.norm_candidates(norm, 0.5).tolist() == [1, 2, 3, 5]
    assert cf.entropy_neurons(norm, var, 0.5, 2).tolist() == [5, 2]
    assert cf.entropy_neurons(norm, var, 0.5, 10).tolist() == [5, 2, 3, 1]   # fewer candidates than n
    # ties in LogitVar go by index; low-norm neurons never qualify however low their LogitVar
    assert cf.entropy_neurons(norm, np.zeros(8), 0.5, 3).tolist() == [1, 2, 3]
    # "strictly greater": a norm equal to the quantile is not a candidate
    assert cf.norm_candidates(np.array([1.0, 2.0, 2.0, 2.0, 3.0]), 0.5).tolist() == [4]


# the paper's Llama-3.1-8B sets (METHODS.md §6.4, Figure 1(d))
PAPER_BASE = {12111, 993, 207, 2287, 8677, 10510, 1852, 11184, 12664, 8775}
PAPER_INSTRUCT = {12111, 993, 207, 2287, 8677, 5463, 1852, 10510, 9032, 11184}


def test_iou_and_venn_regions_on_the_papers_sets():
    assert cf.iou(PAPER_BASE, PAPER_INSTRUCT) == pytest.approx(8 / 12)
    assert cf.iou(PAPER_BASE, PAPER_BASE) == 1.0 and cf.iou([1], [2]) == 0.0
    regions = cf.venn_regions({"base": PAPER_BASE, "sft": PAPER_BASE, "instruct": PAPER_INSTRUCT})
    assert regions[("base", "sft", "instruct")] == sorted(PAPER_BASE & PAPER_INSTRUCT)
    assert regions[("base", "sft")] == [8775, 12664]
    assert regions[("instruct",)] == [5463, 9032]
    assert set(regions) == {("base", "sft", "instruct"), ("base", "sft"), ("instruct",)}


def test_selection_grid_and_iou_grid():
    rng = np.random.default_rng(0)
    a = pd.DataFrame({"neuron": np.arange(40), "norm": rng.random(40), "logit_var": rng.random(40)})
    b = a.assign(logit_var=a["logit_var"].to_numpy()[::-1].copy())
    sel = cf.selection_grid({"a": a, "b": b, "a2": a.copy()}, [0.25, 0.5], [3, 5])
    assert set(sel.groupby(["model", "top_norm_fraction", "n_neurons"]).size()) == {3, 5}
    pairs = [("a", "b"), ("a", "a2")]  # unordered pairs, as the plan gives them (tests/test_plan.py)
    table = cf.iou_grid(sel, pairs)
    assert len(table) == 2 * 4
    assert (table.loc[table["model_b"] == "a2", "iou"] == 1.0).all()
    for row in table.itertuples():
        sa = set(sel[(sel.model == row.model_a) & (sel.top_norm_fraction == row.top_norm_fraction)
                     & (sel.n_neurons == row.n_neurons)]["neuron"])
        sb = set(sel[(sel.model == row.model_b) & (sel.top_norm_fraction == row.top_norm_fraction)
                     & (sel.n_neurons == row.n_neurons)]["neuron"])
        assert row.iou == pytest.approx(len(sa & sb) / len(sa | sb))
    alone = cf.iou_grid(sel, [])  # a one-model family has no pair: an empty table, not a KeyError
    assert alone.empty and list(alone.columns) == list(table.columns)


def test_ablation_neurons_groups():
    rng = np.random.default_rng(1)
    stats = pd.DataFrame({"neuron": np.arange(100), "norm": rng.random(100), "logit_var": rng.random(100)})
    picked = cf.ablation_neurons(stats, 0.25, 10, n_random=5, seed=3)
    entropy = picked[picked.group == "entropy"]["neuron"].tolist()
    assert entropy == cf.entropy_neurons(stats["norm"], stats["logit_var"], 0.25, 10).tolist()
    random = picked[picked.group == "random"]["neuron"].tolist()
    assert len(random) <= 5 and not set(random) & set(entropy)
    # same seed, same width: the same random neurons in another model
    other = stats.assign(logit_var=rng.random(100))
    drawn = set(cf.ablation_neurons(other, 0.25, 10, n_random=5, seed=3).query("group == 'random'")["neuron"])
    assert set(random) - drawn <= set(cf.entropy_neurons(other["norm"], other["logit_var"], 0.25, 10))
    everything = cf.ablation_neurons(stats, 0.25, 10, mode="all")
    assert sorted(everything["neuron"]) == list(range(100)) and (everything.group == "entropy").sum() == 10
    with pytest.raises(ValueError, match="mode"):
        cf.ablation_neurons(stats, 0.25, 10, mode="some")


def test_spread_rows():
    assert cf.spread_rows(10, None).tolist() == list(range(10))
    assert cf.spread_rows(10, 3).tolist() == [0, 4, 9] or cf.spread_rows(10, 3).tolist() == [0, 5, 9]
    assert cf.spread_rows(3, 10).tolist() == [0, 1, 2]


# ------------------------------------------------------------------------------ ablation

def _clean_last_block(adapter, ids, ablate=None):
    """Last block output and logits of one text, optionally with a neuron mean-ablated
    (a hook over the whole model's forward pass)."""
    grabbed = {}
    regs = [(adapter.blocks[-1], "forward", lambda m, a, o: grabbed.__setitem__("x", block_output(o)))]
    if ablate is not None:
        neuron, value = ablate

        def set_to_mean(module, args, kwargs):
            a = args[0].clone()
            a[..., neuron] = value
            return (a,), kwargs

        regs.append((adapter.mlp_out(-1), "pre", set_to_mean))
    with torch.no_grad(), hooked(regs):
        logits = adapter.model(torch.tensor([ids])).logits
    return grabbed["x"], logits


def _entropy_loss(logits, ids):
    h, l = cf.token_entropy_and_loss(logits, torch.tensor([ids]))
    return h.flatten(), l.flatten()


@pytest.mark.parametrize("arch", ARCHS + [a for a in DISCOVERED if a not in MIXTURES_OF_EXPERTS])
def test_final_norm_and_logits_match_the_model(arch, tiny_model_dir):
    adapter = _adapter(tiny_model_dir(arch))
    norm = cf.FinalNorm.of(adapter)
    x = 3 * torch.randn(4, 6, adapter.d_model)
    torch.testing.assert_close(norm(x), adapter.final_norm(x).float(), atol=1e-5, rtol=1e-5)
    ids = adapter.encode([SENTENCES[0]])[0]
    x, logits = _clean_last_block(adapter, ids)
    torch.testing.assert_close(cf.logits_of(adapter, adapter.final_norm(x)), logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ARCHS + [a for a in DISCOVERED if a not in MIXTURES_OF_EXPERTS])
def test_total_effect_equals_a_full_forward_with_the_neuron_ablated(arch, tiny_model_dir):
    adapter = _adapter(tiny_model_dir(arch))
    ids = cf.text_token_ids(adapter, SENTENCES[:6])
    means = cf.mean_activations(adapter, ids, batch_size=4)
    neurons = [0, 9]
    effects = cf.ablation_effects(adapter, ids, neurons, means, batch_size=4)
    for i in neurons:
        clean, ablated = [], []
        for x in ids:
            clean.append(_entropy_loss(_clean_last_block(adapter, x)[1], x))
            ablated.append(_entropy_loss(_clean_last_block(adapter, x, (i, float(means[i])))[1], x))
        for k, metric in enumerate(cf.METRICS):
            c = torch.cat([t[k] for t in clean]).double()
            a = torch.cat([t[k] for t in ablated]).double()
            row = effects[(effects.neuron == i) & (effects.effect == "total") & (effects.metric == metric)].iloc[0]
            assert row.n_tokens == len(c)
            assert row.clean == pytest.approx(c.mean().item(), abs=1e-5)
            assert row.change == pytest.approx((a - c).mean().item(), abs=1e-6)
            assert row.abs_change == pytest.approx((a - c).abs().mean().item(), abs=1e-6)


@pytest.mark.parametrize("arch", KINDS)
def test_direct_effect_freezes_the_final_norm_scale(arch, tiny_model_dir):
    """Direct effect = the final norm applied to the ablated residual with the clean
    token's denominator, written out per norm kind: RMSNorm g * x' / rms(x); LayerNorm
    g * (x' - mean x') / std(x) + b."""
    adapter = _adapter(tiny_model_dir(arch))
    ids = cf.text_token_ids(adapter, SENTENCES[:5])
    means = cf.mean_activations(adapter, ids, batch_size=2)
    i = 3
    effects = cf.ablation_effects(adapter, ids, [i], means, batch_size=2)
    fn = adapter.final_norm
    changes = {m: [] for m in cf.METRICS}
    for x_ids in ids:
        x, clean_logits = _clean_last_block(adapter, x_ids)
        x_abl, _ = _clean_last_block(adapter, x_ids, (i, float(means[i])))
        if isinstance(fn, torch.nn.LayerNorm):
            h = fn.weight * (x_abl - x_abl.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + fn.eps) + fn.bias
        else:
            h = fn.weight * x_abl / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + fn.variance_epsilon)
        with torch.no_grad():
            direct_logits = adapter.unembed(h)
        for k, m in enumerate(cf.METRICS):
            changes[m].append(_entropy_loss(direct_logits, x_ids)[k] - _entropy_loss(clean_logits, x_ids)[k])
    for m in cf.METRICS:
        row = effects[(effects.effect == "direct") & (effects.metric == m)].iloc[0]
        assert row.change == pytest.approx(torch.cat(changes[m]).double().mean().item(), abs=1e-6)
    # the direct effect differs from the total one (the scale moved), or the test could not fail
    total = effects[(effects.effect == "total") & (effects.metric == "entropy")]["abs_change"].item()
    direct = effects[(effects.effect == "direct") & (effects.metric == "entropy")]["abs_change"].item()
    assert abs(total - direct) > 1e-9


@pytest.mark.parametrize("arch", KINDS)
def test_planted_entropy_neuron_acts_only_through_the_norm_scale(arch, fresh):
    adapter = fresh(arch, seed=4)
    adapter.model.double()                 # so that "no change" can be told from rounding
    randomise_gain(adapter)
    with torch.no_grad():
        adapter.unembed_weight.mul_(30)    # sharper next-token distributions than at init
    planted, ordinary = 5, 6
    plant_entropy_neuron(adapter, planted, size=300)
    ids = cf.text_token_ids(adapter, SENTENCES)
    means = cf.mean_activations(adapter, ids, batch_size=4)
    effects = cf.ablation_effects(adapter, ids, [planted, ordinary], means, batch_size=4).set_index(
        ["neuron", "effect", "metric"])["abs_change"]
    for m in cf.METRICS:
        # constant logits: the direct path changes no probability; the scale does, and an
        # ordinary neuron's direct path does
        assert effects[(planted, "direct", m)] < 1e-10
        assert effects[(planted, "total", m)] > 1e-2
        assert effects[(ordinary, "direct", m)] > 1e-6


@pytest.mark.parametrize("arch", KINDS)
def test_ablating_a_neuron_that_writes_nothing_changes_nothing(arch, fresh):
    adapter = fresh(arch, seed=5)
    with torch.no_grad():
        adapter.mlp_out_rows(-1)[2] = 0.0
    ids = cf.text_token_ids(adapter, SENTENCES[:4])
    means = cf.mean_activations(adapter, ids)
    effects = cf.ablation_effects(adapter, ids, [2], means)
    np.testing.assert_allclose(effects["abs_change"], 0.0, atol=1e-6)


def test_mean_activations_and_effects_do_not_depend_on_batching(tiny_model_dir):
    adapter = _adapter(tiny_model_dir("llama"))
    ids = cf.text_token_ids(adapter, SENTENCES)
    acts = []
    for x in ids:
        grabbed = {}
        with torch.no_grad(), hooked([(adapter.mlp_out(-1), "pre",
                                       lambda m, a, k: grabbed.__setitem__("a", a[0]))]):
            adapter.model(torch.tensor([x]))
        acts.append(grabbed["a"][0].double())
    expected = torch.cat(acts).mean(0)
    for bs in (1, 3, 16):
        torch.testing.assert_close(cf.mean_activations(adapter, ids, batch_size=bs), expected, atol=1e-6, rtol=1e-5)
    one = cf.ablation_effects(adapter, ids, [1, 4], expected, batch_size=1)
    many = cf.ablation_effects(adapter, ids, [1, 4], expected, batch_size=5)
    np.testing.assert_allclose(one[["clean", "ablated", "abs_change"]], many[["clean", "ablated", "abs_change"]],
                               atol=1e-6, rtol=1e-5)


def test_text_token_ids_cut_and_drop(tiny_model_dir):
    adapter = _adapter(tiny_model_dir("llama"))
    ids = cf.text_token_ids(adapter, ["", "paris", SENTENCES[0]], max_tokens=3)
    bos = adapter.tokenizer.bos_token_id
    assert len(ids) == 2 and all(x[0] == bos for x in ids) and [len(x) for x in ids] == [2, 3]
