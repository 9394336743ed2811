"""Oracle tests of the truth probes, transfer, layer choice, PCA and steering score
(ptmech.truth.probes, ptmech.truth.steering.steering_scores): each checks a consequence of the
mathematics on synthetic data where the answer is known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ptmech.truth import probes as truth
from ptmech.truth.steering import steering_scores


def gaussian_classes(rng, n=400, d=16, gap=3.0, shift=None):
    """Two Gaussian classes (identity covariance) whose means differ by ``gap`` along a
    random unit vector; returns acts [n, d], labels, the true mean difference."""
    u = rng.normal(size=d)
    u /= np.linalg.norm(u)
    y = np.repeat([1, 0], n // 2)
    x = rng.normal(size=(n, d)) + np.outer(y - 0.5, gap * u)
    if shift is not None:
        x = x + shift
    return x, y, gap * u


def test_mm_probe_recovers_the_mean_difference_and_separates_the_classes():
    rng = np.random.default_rng(0)
    x, y, diff = gaussian_classes(rng, n=8000, d=16, gap=4.0)
    train, test = np.arange(0, 8000, 2), np.arange(1, 8000, 2)
    probe = truth.fit_mm_probe(truth.centre(x[train]), y[train])
    # the sampling error of a difference of two means of 2000 unit Gaussians is ~0.03 per coordinate
    np.testing.assert_allclose(probe.direction, diff, atol=0.15)
    assert truth.cosine(probe.direction, diff) > 0.995
    # Bayes accuracy of two unit Gaussians 4 apart is Phi(2) = 0.977
    assert probe.accuracy(truth.centre(x[test]), y[test]) == pytest.approx(0.977, abs=0.01)
    # the score is linear in the projection: weight is a positive multiple of theta
    assert truth.cosine(probe.weight, probe.direction) == pytest.approx(1.0)


def test_mm_probe_on_the_same_direction_with_new_draws_generalises():
    rng = np.random.default_rng(3)
    u = rng.normal(size=32)
    u /= np.linalg.norm(u)

    def draw(n, offset):
        y = rng.integers(0, 2, n)
        return rng.normal(size=(n, 32)) + np.outer(y - 0.5, 5 * u) + offset, y

    x_train, y_train = draw(600, 0.0)
    x_test, y_test = draw(600, 10 * u + rng.normal(size=32))  # a dataset with its own mean
    probe = truth.fit_mm_probe(truth.centre(x_train), y_train)
    assert probe.accuracy(truth.centre(x_test), y_test) > 0.95
    # without centring the test set's own mean, the offset would wreck the probe
    assert probe.accuracy(x_test, y_test) < 0.7


def _log_likelihood(coef, bias, x, y):
    z = coef * x + bias
    return float(np.sum(np.where(y == 1, -np.logaddexp(0, -z), -np.logaddexp(0, z))))


def test_the_mm_fits_reach_the_same_optimum_unless_the_projection_is_huge():
    """The optimal fit is scale-equivariant (coef x scale and the intercept do not move) and
    no fit has a higher likelihood; the paper's fit (the raw projection) matches it at
    ordinary scales and may stop short at huge ones, never above it."""
    rng = np.random.default_rng(0)
    y = np.r_[np.ones(400), np.zeros(400)].astype(int)
    z = np.r_[rng.normal(1, 1, 400), rng.normal(0, 1, 400)] + 3.0  # optimal intercept far from 0
    c0, b0 = truth.MM_FITS["optimal"](z, y)
    for scale in (1.0, 1e3, 1e5, 1e7):
        x = scale * z
        c, b = truth.MM_FITS["optimal"](x, y)
        assert c * scale == pytest.approx(c0, rel=1e-4) and b == pytest.approx(b0, rel=1e-4)
        cp, bp = truth.MM_FITS["paper"](x, y)
        assert _log_likelihood(cp, bp, x, y) <= _log_likelihood(c, b, x, y) + 1e-3  # solver tolerance
        if scale <= 1e3:
            assert cp * scale == pytest.approx(c0, rel=1e-2) and bp == pytest.approx(b0, rel=1e-2)
    probe = truth.fit_mm_probe(z[:, None] - z.mean(), y, fit="paper")
    assert probe.kind == "mm" and probe.accuracy(z[:, None] - z.mean(), y) > 0.6
    with pytest.raises(truth.TruthError, match="unknown MMProbe fit"):
        truth.fit_mm_probe(z[:, None], y, fit="sloppy")


def test_lr_probe_separates_gaussian_classes_whatever_the_scale():
    rng = np.random.default_rng(2)
    x, y, diff = gaussian_classes(rng, n=600, d=16, gap=4.0)
    for scale in (1e-3, 1.0, 1e3):
        probe = truth.fit_lr_probe(truth.centre(x * scale), y)
        assert probe.accuracy(truth.centre(x * scale), y) > 0.95
        assert truth.cosine(probe.direction, diff) > 0.9


def test_probe_needs_both_classes():
    with pytest.raises(truth.TruthError, match="both true and false"):
        truth.fit_mm_probe(np.ones((4, 3)), np.ones(4, dtype=int))


def test_heldout_splits_leave_one_out_of_the_training_pool():
    splits = truth.heldout_splits(["a", "b", "c"], ["a", "b", "c", "x"])
    assert splits == [("a", ["b", "c", "x"]), ("b", ["a", "c", "x"]), ("c", ["a", "b", "x"])]
    assert truth.heldout_splits(["a", "b"]) == [("a", ["b"]), ("b", ["a"])]
    with pytest.raises(truth.TruthError, match="no training dataset"):
        truth.heldout_splits(["a", "b"], ["a"])


def _two_layer_data(rng, datasets=("p", "q", "r"), d=12, n=200):
    """Layer k=1 carries a shared truth direction, k=2 is noise."""
    u = rng.normal(size=d)
    acts, labels = {1: {}, 2: {}}, {}
    for ds in datasets:
        y = rng.integers(0, 2, n)
        labels[ds] = y
        acts[1][ds] = truth.centre(rng.normal(size=(n, d)) + np.outer(y - 0.5, 3 * u) + rng.normal(size=d) * 5)
        acts[2][ds] = truth.centre(rng.normal(size=(n, d)))
    return acts, labels


def test_probe_sweep_finds_the_informative_layer_and_probes_round_trip(tmp_path):
    rng = np.random.default_rng(4)
    acts, labels = _two_layer_data(rng)
    splits = truth.heldout_splits(list(labels))
    table, probes = truth.probe_sweep(((k, acts[k]) for k in (1, 2)), labels, splits, kinds=["mm", "lr"], n_layers=2)
    assert set(table.columns) >= {"probe", "heldout", "k", "accuracy", "n"}
    assert len(table) == 2 * 3 * 2
    mean = table.groupby("k")["accuracy"].mean()
    assert mean[1] > 0.9 and mean[2] < 0.65
    # the stored probe reproduces the table's accuracy
    p = probes.probe("mm", "q", 1)
    assert p.accuracy(acts[1]["q"], labels["q"]) == pytest.approx(
        table.query("probe == 'mm' and heldout == 'q' and k == 1")["accuracy"].item())
    # the mm probe's direction is the mean difference of the training datasets
    train = np.concatenate([acts[1]["p"], acts[1]["r"]]), np.concatenate([labels["p"], labels["r"]])
    np.testing.assert_allclose(p.direction, truth.mean_difference(*train))
    np.testing.assert_allclose(probes.steering_vector("mm", "q", 1), p.direction)
    probes.save(tmp_path / "p.npz")
    back = truth.ProbeSet.load(tmp_path / "p.npz")
    assert back.heldout == probes.heldout and back.layers == [1, 2] and back.n_layers == 2
    assert back.train == [["q", "r"], ["p", "r"], ["p", "q"]]
    np.testing.assert_array_equal(back.weight["lr"], probes.weight["lr"])


def test_steering_vector_is_the_mean_gap_projected_on_the_direction():
    md = np.array([3.0, 4.0, 0.0])
    np.testing.assert_allclose(truth.steering_vector(md, np.array([2.0, 0, 0])), [3.0, 0, 0])
    np.testing.assert_allclose(truth.steering_vector(md, md), md)


def test_transfer_of_a_model_onto_itself_is_its_own_accuracy_and_cosine_one():
    rng = np.random.default_rng(5)
    acts, labels = _two_layer_data(rng)
    splits = truth.heldout_splits(list(labels))
    acc, probes = truth.probe_sweep(((k, acts[k]) for k in (1, 2)), labels, splits, kinds=["mm"])
    transfer, cos = truth.probe_transfer(((k, acts[k], acts[k]) for k in (1, 2)), labels, probes, probes)
    assert len(transfer) == 2 * 3 * 4 and set(transfer["probe_model"]) == {"a", "b"}
    for (h, k), group in transfer.groupby(["heldout", "k"]):
        own = acc.query("heldout == @h and k == @k")["accuracy"].item()
        np.testing.assert_allclose(group["accuracy"], own)
    np.testing.assert_allclose(cos["cosine"], 1.0)


def test_transfer_between_models_with_opposite_truth_directions():
    """Model B's activations are model A's negated: the directions are antiparallel, each
    probe is perfect on its own model and perfectly wrong on the other."""
    rng = np.random.default_rng(6)
    acts, labels = _two_layer_data(rng)
    neg = {k: {ds: -a for ds, a in layer.items()} for k, layer in acts.items()}
    splits = truth.heldout_splits(list(labels))
    _, pa = truth.probe_sweep(((1, acts[1]),), labels, splits)
    _, pb = truth.probe_sweep(((1, neg[1]),), labels, splits)
    transfer, cos = truth.probe_transfer([(1, acts[1], neg[1])], labels, pa, pb)
    np.testing.assert_allclose(cos["cosine"], -1.0)
    native = transfer[transfer["probe_model"] == transfer["eval_model"]]["accuracy"]
    crossed = transfer[transfer["probe_model"] != transfer["eval_model"]]["accuracy"]
    assert native.min() > 0.9 and crossed.max() < 0.1
    np.testing.assert_allclose(native.to_numpy() + crossed.to_numpy(), 1.0, atol=1e-12)


def test_choose_layers_best_heldout_config_and_relative_intervention():
    acc = pd.DataFrame({"probe": "mm", "heldout": ["a", "b"] * 5,
                        "k": [0, 0, 1, 1, 2, 2, 3, 3, 4, 4],
                        "accuracy": [1.0, 1.0, 0.6, 0.7, 0.9, 0.9, 0.95, 0.85, 0.8, 0.8]})
    # k=0 (embeddings) is never chosen; k=2 and k=3 tie at 0.9: the shallower wins
    c = truth.choose_layers(acc, n_layers=4, intervene_fraction=0.25)
    assert (c["probe_k"], c["probe_source"]) == (2, "best_heldout")
    # the intervention starts at the output of block round(0.25 * 4) = 1, k = 2
    assert c["intervene_k"] == 2 and c["steer_k"] == [2] and c["intervene_source"] == "fraction"
    assert c["scores"] == {1: pytest.approx(0.65), 2: pytest.approx(0.9), 3: pytest.approx(0.9), 4: pytest.approx(0.8)}
    # the paper's Llama-3.1 setting: truth layer 12 (k = 13), steering from layer 8 (k = 9)
    acc32 = pd.DataFrame({"probe": "mm", "heldout": "a", "k": range(1, 33), "accuracy": 0.5})
    c = truth.choose_layers(acc32, n_layers=32, probe_k=13)
    assert c["probe_k"] == 13 and c["steer_k"] == [9, 10, 11, 12, 13] and c["probe_source"] == "config"
    assert c["steer_k"] == [l + 1 for l in range(8, 13)]  # the paper's blocks 8..12, as k
    # an intervention start after the probe is clamped to it
    c = truth.choose_layers(acc32, n_layers=32, probe_k=6, intervene_k=10)
    assert c["steer_k"] == [6] and c["intervene_source"] == "config"
    for bad in (0, 33):  # k = 0 is the embedding output, no block's; k = 33 is past the last block
        with pytest.raises(truth.TruthError, match="outside"):
            truth.choose_layers(acc32, n_layers=32, probe_k=bad)


def test_pca_plane_holds_the_truth_direction():
    rng = np.random.default_rng(7)
    x, y, diff = gaussian_classes(rng, n=500, d=20, gap=8.0)
    acts = {"base": x, "post": x * 2 + rng.normal(size=x.shape) * 0.1}
    table, explained = truth.pca_table(acts, {"base": y, "post": y}, {"base": diff, "post": -diff})
    assert explained[0] > 0.3
    arrows = table[table["kind"] == "direction"][["pc1", "pc2"]].to_numpy()
    # the class separation is the top principal axis: the unit directions lie almost in the plane
    assert np.linalg.norm(arrows, axis=1).min() > 0.95
    np.testing.assert_allclose(arrows[0], -arrows[1])
    pts = table[(table["kind"] == "statement") & (table["model"] == "base")]
    assert len(pts) == 500 and set(pts["label"]) == {0, 1}


def test_steering_scores_follow_the_paper_formula():
    labels = np.array([1, 1, 0, 0])
    base = np.array([0.8, 0.6, -0.5, -0.7])
    steered = np.array([-0.6, 0.2, 0.5, -0.9])
    s = steering_scores(labels, base, steered).set_index("subset")
    # true -> false: mean base 0.7, steered -0.2: (-0.2 - 0.7) / (-1 - 0.7)
    assert s.loc["true_to_false", "score"] == pytest.approx(0.9 / 1.7)
    # false -> true: mean base -0.6, steered -0.2: (-0.2 + 0.6) / (1 + 0.6)
    assert s.loc["false_to_true", "score"] == pytest.approx(0.4 / 1.6)
    assert s.loc["average", "score"] == pytest.approx((0.9 / 1.7 + 0.4 / 1.6) / 2)
    # one of two correct true statements and one of two correct false ones flipped
    assert s.loc["true_to_false", "flip_rate"] == 0.5 and s.loc["false_to_true", "flip_rate"] == 0.5
    assert s.loc["average", "flip_rate"] == 0.5 and s.loc["average", "n_flipped"] == 2
    # the average flip rate pools the statements: with no true statement answered right, it is
    # the false statements' rate
    one_sided = steering_scores(labels, np.array([-0.8, -0.6, -0.5, -0.7]), steered).set_index("subset")
    assert np.isnan(one_sided.loc["true_to_false", "flip_rate"]) and one_sided.loc["average", "flip_rate"] == 0.5
    # no change: score 0; pushed all the way: score 1
    assert steering_scores(labels, base, base).set_index("subset").loc["average", "score"] == 0
    full = steering_scores(labels, base, np.array([-1, -1, 1, 1.0])).set_index("subset")
    assert full.loc["average", "score"] == pytest.approx(1) and full.loc["average", "flip_rate"] == 1
