"""Truthfulness probes, probe transfer, direction similarity and the probe layer
(METHODS.md §4.2-4.4, 4.7). Everything here runs from cached activations: no model is
loaded.

Layers are residual indices ``k`` (``k = l + 1`` is the output of decoder block ``l``, the
paper's truth "layer l"). Activations are ``[N, d]`` float arrays of one dataset at one
``k``, read at the statement's last token; labels are ``[N]`` ints (1 true, 0 false).

Centring (§4.2): every dataset's activations are mean-centred on their own mean, for every
model, the evaluation dataset included (the paper's transductive centring).

Probes (§4.3), both reduced to a linear score ``x @ weight + bias`` (> 0 means TRUE):

* ``mm`` (MMProbe, the paper's): direction ``theta = mu_true - mu_false`` of the centred
  training activations, then a 1-D unregularised logistic regression on ``x @ theta``;
* ``lr``: an L2 logistic regression (scikit-learn) on the centred activations divided by
  their RMS, so that its ``C`` means the same for every model whatever its scale.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from ..layers import LAYER_CONVENTION

PROBE_KINDS = ("mm", "lr")


class TruthError(ValueError):
    pass


# ----------------------------------------------------------------------------- probes

@dataclass
class Probe:
    """A fitted linear truth probe. ``direction`` [d]: the truth direction it defines
    (``theta`` for mm, the weight vector for lr); ``weight`` [d] and ``bias``: its score."""

    kind: str
    direction: np.ndarray
    weight: np.ndarray
    bias: float

    def score(self, acts: np.ndarray) -> np.ndarray:
        """[N, d] -> [N] log-odds of TRUE."""
        return acts @ self.weight + self.bias

    def predict(self, acts: np.ndarray) -> np.ndarray:
        """[N, d] -> [N] predicted labels (1 TRUE, 0 FALSE)."""
        return (self.score(acts) > 0).astype(np.int64)

    def accuracy(self, acts: np.ndarray, labels: np.ndarray) -> float:
        return float((self.predict(acts) == np.asarray(labels)).mean())


def centre(acts: np.ndarray) -> np.ndarray:
    """[N, d] minus its mean over statements."""
    return acts - acts.mean(0, keepdims=True)


def mean_difference(acts: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """[d] mean of the true statements minus mean of the false ones."""
    labels = np.asarray(labels)
    if not (labels == 1).any() or not (labels == 0).any():
        raise TruthError("a truth probe needs both true and false statements")
    return acts[labels == 1].mean(0) - acts[labels == 0].mean(0)


def _sklearn_unregularised() -> dict:
    """scikit-learn >= 1.8 spells "no penalty" C=inf (penalty=None is deprecated there)."""
    import sklearn

    major, minor = (int(x) for x in sklearn.__version__.split(".")[:2])
    return {"C": np.inf} if (major, minor) >= (1, 8) else {"penalty": None}


_UNREGULARISED = _sklearn_unregularised()


def _logistic_1d(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Unregularised logistic regression of ``y`` on the scalar ``x``: (coef, intercept).

    Fitted on standardised ``x`` and mapped back (the same optimum, without the solver's
    trouble with projections of size 1e4)."""
    from sklearn.linear_model import LogisticRegression

    m, s = float(x.mean()), float(x.std()) or 1.0
    lr = LogisticRegression(**_UNREGULARISED, max_iter=1000)
    lr.fit(((x - m) / s)[:, None], y)
    c, b = float(lr.coef_[0, 0]), float(lr.intercept_[0])
    return c / s, b - c * m / s


def _logistic_1d_paper(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """The paper's fit: scikit-learn's unregularised logistic regression, default solver and
    iterations, on the raw projection ``x``. Its scale (1e3-1e6 for real models) leaves the
    solver near its starting intercept of 0, so at weak layers the probe can call every
    statement one label; ``_logistic_1d`` finds the optimum instead (METHODS.md §4.3)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    lr = LogisticRegression(**_UNREGULARISED)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        lr.fit(x[:, None], y)
    return float(lr.coef_[0, 0]), float(lr.intercept_[0])


MM_FITS = {"optimal": _logistic_1d, "paper": _logistic_1d_paper}


def fit_mm_probe(acts: np.ndarray, labels: np.ndarray, fit: str = "optimal") -> Probe:
    """MMProbe on (already centred) ``acts`` [N, d]: direction theta = mu_true - mu_false,
    then a 1-D logistic fit of the labels on ``acts @ theta`` (``fit``: ``optimal``, on the
    standardised projection, or ``paper``, on the raw one as the paper's code does)."""
    if fit not in MM_FITS:
        raise TruthError(f"unknown MMProbe fit {fit!r} (known: {', '.join(MM_FITS)})")
    theta = mean_difference(acts, labels)
    coef, intercept = MM_FITS[fit](acts @ theta, np.asarray(labels))
    return Probe("mm", theta, coef * theta, intercept)


def fit_lr_probe(acts: np.ndarray, labels: np.ndarray, C: float = 1.0, max_iter: int = 1000,
                 solver: str = "auto") -> Probe:
    """L2 logistic-regression probe on (already centred) ``acts`` [N, d], fitted on
    ``acts`` divided by their RMS (so ``C`` does not depend on the model's scale).

    ``solver`` "auto": liblinear up to d = 512 (fastest for small models), else lbfgs
    (benchmarks/truth_probes.py)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    mean_difference(acts, labels)  # both classes present
    if solver == "auto":
        solver = "liblinear" if acts.shape[1] <= 512 else "lbfgs"
    scale = float(np.sqrt((acts ** 2).mean())) or 1.0
    lr = LogisticRegression(C=C, max_iter=max_iter, solver=solver)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        lr.fit(acts / scale, np.asarray(labels))
    w = lr.coef_[0] / scale
    return Probe("lr", w.copy(), w, float(lr.intercept_[0]))


def fit_probe(kind: str, acts: np.ndarray, labels: np.ndarray, lr_settings: Mapping | None = None,
              mm_settings: Mapping | None = None) -> Probe:
    if kind == "mm":
        return fit_mm_probe(acts, labels, **(mm_settings or {}))
    if kind == "lr":
        return fit_lr_probe(acts, labels, **(lr_settings or {}))
    raise TruthError(f"unknown probe kind {kind!r} (known: {', '.join(PROBE_KINDS)})")


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return float(a @ b / (na * nb)) if na > 0 and nb > 0 else float("nan")


# ---------------------------------------------------------------------- leave-one-out

def heldout_splits(datasets: Sequence[str], train_datasets: Sequence[str] | None = None) -> list[tuple[str, list[str]]]:
    """(held-out dataset, training datasets) for each of ``datasets``: the training sets are
    ``train_datasets`` (default: all ``datasets``) without the held-out one."""
    pool = list(datasets if train_datasets is None else train_datasets)
    out = []
    for h in datasets:
        train = [d for d in pool if d != h]
        if not train:
            raise TruthError(f"held-out dataset {h!r} leaves no training dataset (training pool {pool})")
        out.append((h, train))
    return out


# A layer's data: dataset -> centred activations [N, d] at one residual index.
LayerActs = Mapping[str, np.ndarray]


@dataclass
class ProbeSet:
    """Every probe of one model: for each probe kind, held-out dataset ``h`` and residual
    index ``k``, the probe trained on the other datasets. Arrays are indexed
    ``[h, k_index, ...]``; ``mean_diff`` [H, K, d] is ``mu_true - mu_false`` of the centred
    training activations (the paper's steering vector source)."""

    heldout: list[str]
    train: list[list[str]]
    layers: list[int]
    kinds: list[str]
    direction: dict[str, np.ndarray]   # kind -> [H, K, d]
    weight: dict[str, np.ndarray]      # kind -> [H, K, d]
    bias: dict[str, np.ndarray]        # kind -> [H, K]
    mean_diff: np.ndarray              # [H, K, d]
    n_layers: int = -1

    def probe(self, kind: str, heldout: str, k: int) -> Probe:
        h, j = self._index(heldout, k)
        return Probe(kind, self.direction[kind][h, j], self.weight[kind][h, j], float(self.bias[kind][h, j]))

    def _index(self, heldout: str, k: int) -> tuple[int, int]:
        if heldout not in self.heldout:
            raise TruthError(f"no probe with held-out dataset {heldout!r} (have {self.heldout})")
        if k not in self.layers:
            raise TruthError(f"no probe at residual index k={k} (have {self.layers})")
        return self.heldout.index(heldout), self.layers.index(k)

    def steering_vector(self, kind: str, heldout: str, k: int) -> np.ndarray:
        """[d] the paper's intervention vector (§4.5): the class-mean gap projected on the
        probe's unit direction, ``((mu_T - mu_F) . u) u``; for mm exactly ``mu_T - mu_F``."""
        h, j = self._index(heldout, k)
        return steering_vector(self.mean_diff[h, j], self.direction[kind][h, j])

    def save(self, path) -> None:
        arrays = {"heldout": np.array(self.heldout), "layers": np.array(self.layers),
                  "kinds": np.array(self.kinds), "mean_diff": self.mean_diff,
                  "train": np.array(["|".join(t) for t in self.train]), "n_layers": np.array(self.n_layers)}
        for kind in self.kinds:
            arrays[f"direction_{kind}"] = self.direction[kind]
            arrays[f"weight_{kind}"] = self.weight[kind]
            arrays[f"bias_{kind}"] = self.bias[kind]
        with open(path, "wb") as f:
            np.savez(f, **arrays)

    @classmethod
    def load(cls, path) -> "ProbeSet":
        with np.load(path) as z:
            kinds = [str(x) for x in z["kinds"]]
            return cls(heldout=[str(x) for x in z["heldout"]], train=[str(t).split("|") for t in z["train"]],
                       layers=[int(x) for x in z["layers"]], kinds=kinds,
                       direction={k: z[f"direction_{k}"] for k in kinds}, weight={k: z[f"weight_{k}"] for k in kinds},
                       bias={k: z[f"bias_{k}"] for k in kinds}, mean_diff=z["mean_diff"], n_layers=int(z["n_layers"]))


def steering_vector(mean_diff: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """[d] ``((mean_diff . u) u)`` with ``u = direction / |direction|``."""
    n = np.linalg.norm(direction)
    if n == 0:
        raise TruthError("the probe direction is zero")
    u = direction / n
    return (mean_diff @ u) * u


def probe_sweep(
    layers: Iterable[tuple[int, LayerActs]],
    labels: Mapping[str, np.ndarray],
    splits: Sequence[tuple[str, list[str]]],
    kinds: Sequence[str] = ("mm",),
    lr_settings: Mapping | None = None,
    n_layers: int = -1,
    log: Callable[[str], None] = lambda s: None,
    mm_settings: Mapping | None = None,
) -> tuple[pd.DataFrame, ProbeSet]:
    """Train every probe kind on each split's training datasets and score it on the
    held-out one, at every residual index.

    ``layers`` yields ``(k, {dataset: centred acts [N, d]})`` one layer at a time (so the
    whole stack is never in memory). Returns the tidy accuracy table (``probe, heldout, k,
    accuracy, n``) and the ``ProbeSet``."""
    rows = []
    ks, direction, weight, bias, mean_diffs = [], {k: [] for k in kinds}, {k: [] for k in kinds}, \
        {k: [] for k in kinds}, []
    for k, acts in layers:
        ks.append(k)
        per = {kind: ([], [], []) for kind in kinds}
        md = []
        for heldout, train in splits:
            x = np.concatenate([acts[d] for d in train])
            y = np.concatenate([labels[d] for d in train])
            md.append(mean_difference(x, y))
            for kind in kinds:
                probe = fit_probe(kind, x, y, lr_settings, mm_settings)
                per[kind][0].append(probe.direction)
                per[kind][1].append(probe.weight)
                per[kind][2].append(probe.bias)
                rows.append({"probe": kind, "heldout": heldout, "k": k,
                             "accuracy": probe.accuracy(acts[heldout], labels[heldout]),
                             "n": len(labels[heldout])})
        mean_diffs.append(np.stack(md))
        for kind in kinds:
            direction[kind].append(np.stack(per[kind][0]))
            weight[kind].append(np.stack(per[kind][1]))
            bias[kind].append(np.array(per[kind][2]))
        best = max((r for r in rows if r["k"] == k), key=lambda r: r["accuracy"])
        log(f"k={k}: best held-out accuracy {best['accuracy']:.3f} ({best['probe']}, held out {best['heldout']})")
    if not ks:
        raise TruthError("no layers to probe")
    stack = lambda xs: np.stack(xs, axis=1)  # [K, H, ...] -> [H, K, ...]
    probes = ProbeSet(
        heldout=[h for h, _ in splits], train=[t for _, t in splits], layers=ks, kinds=list(kinds),
        direction={k: stack(v) for k, v in direction.items()}, weight={k: stack(v) for k, v in weight.items()},
        bias={k: stack(v) for k, v in bias.items()}, mean_diff=stack(mean_diffs), n_layers=n_layers,
    )
    return pd.DataFrame(rows), probes


# ------------------------------------------------------------------------- transfer

def probe_transfer(
    layers: Iterable[tuple[int, LayerActs, LayerActs]],
    labels: Mapping[str, np.ndarray],
    probes_a: ProbeSet,
    probes_b: ProbeSet,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The 2x2 accuracy matrix of two models' probes (§4.4) and the cosine of their
    directions, per probe kind, held-out dataset and residual index.

    ``layers`` yields ``(k, acts_a, acts_b)``: the held-out datasets' centred activations
    of model A and of model B (the same statements in the same order). Returns
    (``transfer``: ``probe, heldout, k, probe_model, eval_model, accuracy, n`` with models
    named "a" / "b"; ``cosine``: ``probe, heldout, k, cosine``)."""
    if probes_a.heldout != probes_b.heldout or probes_a.kinds != probes_b.kinds:
        raise TruthError(f"the two models' probes differ in held-out datasets or kinds "
                         f"({probes_a.heldout} / {probes_b.heldout}, {probes_a.kinds} / {probes_b.kinds})")
    if probes_a.train != probes_b.train:
        raise TruthError("the two models' probes were trained on different datasets")
    acc_rows, cos_rows = [], []
    for k, acts_a, acts_b in layers:
        for kind in probes_a.kinds:
            for h in probes_a.heldout:
                pa, pb = probes_a.probe(kind, h, k), probes_b.probe(kind, h, k)
                if pa.weight.shape != pb.weight.shape:
                    raise TruthError(f"models of different widths ({pa.weight.shape[0]} / {pb.weight.shape[0]})")
                y = labels[h]
                for pname, probe in (("a", pa), ("b", pb)):
                    for ename, acts in (("a", acts_a), ("b", acts_b)):
                        acc_rows.append({"probe": kind, "heldout": h, "k": k, "probe_model": pname,
                                         "eval_model": ename, "accuracy": probe.accuracy(acts[h], y), "n": len(y)})
                cos_rows.append({"probe": kind, "heldout": h, "k": k, "cosine": cosine(pa.direction, pb.direction)})
    return pd.DataFrame(acc_rows), pd.DataFrame(cos_rows)


# ------------------------------------------------------------------------ the layer

def choose_layers(
    accuracy: pd.DataFrame,
    n_layers: int,
    probe: str = "mm",
    probe_k: int | None = None,
    intervene_k: int | None = None,
    intervene_fraction: float = 0.25,
) -> dict:
    """The probe layer and the steered layers of a family, as residual indices k.

    ``accuracy``: the base model's sweep (``probe, heldout, k, accuracy``). The probe reads
    residual ``probe_k`` when given (1..L; the paper's truth layer l is k = l + 1), else the
    k with the best mean held-out accuracy of ``probe`` (k >= 1, the shallowest on ties).
    Steering adds to every residual from ``intervene_k``, else from
    ``round(intervene_fraction * n_layers) + 1`` (the output of block round(f L)), up to
    the probe's k, never starting after it. Returns a JSON-ready dict with the mean accuracy
    per k (the scores)."""
    sub = accuracy[(accuracy["probe"] == probe) & (accuracy["k"] >= 1)]
    if sub.empty:
        raise TruthError(f"no {probe} probe accuracies at residual indices k >= 1")
    scores = sub.groupby("k")["accuracy"].mean().sort_index()
    if probe_k is None:
        best = float(scores.max())
        probe_k = int(scores.index[np.flatnonzero(np.isclose(scores.to_numpy(), best, rtol=0, atol=1e-12))[0]])
        source = "best_heldout"
    else:
        if not 1 <= probe_k <= n_layers:
            raise TruthError(f"truth probe k = {probe_k} outside the model's block outputs k = 1..{n_layers}")
        source = "config"
    if intervene_k is None:
        intervene_k, int_source = int(round(intervene_fraction * n_layers)) + 1, "fraction"
    else:
        int_source = "config"
    intervene_k = max(1, min(int(intervene_k), probe_k))
    return {
        "probe_k": int(probe_k), "probe_source": source,
        "intervene_k": intervene_k, "intervene_source": int_source,
        "steer_k": list(range(intervene_k, probe_k + 1)),
        "n_layers": n_layers, "probe": probe,
        "probe_accuracy": float(scores.get(probe_k, float("nan"))),
        "scores": {int(k): float(v) for k, v in scores.items()},
        "layer_convention": LAYER_CONVENTION,
    }


# --------------------------------------------------------------------------- PCA

def truth_pca(acts: Mapping[str, np.ndarray], directions: Mapping[str, np.ndarray],
              n_components: int = 2) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """The PCA of Figure 1(b): principal axes of all models' activations together
    (``acts``: model -> [N, d]), each centred and divided by its RMS so that no model's
    scale dominates the axes, and each model's truth direction in that plane.

    Returns (``components`` [n_components, d], ``points``: model -> [N, n_components],
    ``arrows`` [M, n_components]: each unit direction projected on the axes, in the order
    of ``directions`` (its length is the share of the direction in the plane),
    ``explained`` [n_components] variance ratios)."""
    scaled = {m: _unit_rms(centre(a)) for m, a in acts.items()}
    x = np.concatenate(list(scaled.values()))
    _, s, vt = np.linalg.svd(x, full_matrices=False)
    comps = vt[:n_components]
    # a deterministic sign: the largest-magnitude loading of each axis is positive
    signs = np.sign(comps[np.arange(len(comps)), np.abs(comps).argmax(1)])
    comps = comps * signs[:, None]
    explained = (s[:n_components] ** 2) / (s ** 2).sum()
    points = {m: a @ comps.T for m, a in scaled.items()}
    arrows = np.stack([comps @ (v / np.linalg.norm(v)) for v in directions.values()])
    return comps, points, arrows, explained


def _unit_rms(x: np.ndarray) -> np.ndarray:
    rms = float(np.sqrt((x ** 2).sum(1).mean()))
    return x / rms if rms > 0 else x


# ------------------------------------------------------------- reading the cache

def open_caches(paths: Mapping[str, str], model: str | None = None) -> dict:
    """dataset -> open ``Cache`` of the statements, checked to be ``model``'s, of that
    dataset, and to hold the last token (position -1)."""
    from ..cache import Cache, CacheError

    caches = {}
    try:
        for ds, path in paths.items():
            expect = {"dataset": ds, **({"model": model} if model else {})}
            c = caches[ds] = Cache(path, expect=expect)
            if -1 not in c.positions:
                raise CacheError(f"{path}: the truth probes read the last token (position -1); "
                                 f"the cache holds positions {c.positions}")
    except Exception:
        for c in caches.values():
            c.close()
        raise
    return caches


def common_layers(caches: Mapping) -> list[int]:
    """The residual indices every cache holds, in order."""
    sets = [set(c.layers) for c in caches.values()]
    return sorted(set.intersection(*sets))


def centred_layers(caches: Mapping, ks: Iterable[int]) -> Iterable[tuple[int, dict[str, np.ndarray]]]:
    """Yield ``(k, {dataset: centred last-token acts [N, d]})`` one layer at a time."""
    for k in ks:
        yield k, {ds: centre(c.resid(k, -1)) for ds, c in caches.items()}


def cache_labels(caches: Mapping) -> dict[str, np.ndarray]:
    return {ds: c.label("label").astype(np.int64) for ds, c in caches.items()}


def sweep_caches(paths: Mapping[str, str], datasets: Sequence[str], *, train_datasets: Sequence[str] | None = None,
                 model: str | None = None, kinds: Sequence[str] = ("mm",), lr_settings: Mapping | None = None,
                 mm_settings: Mapping | None = None,
                 log: Callable[[str], None] = lambda s: None) -> tuple[pd.DataFrame, ProbeSet]:
    """``probe_sweep`` over the statement caches at ``paths`` (dataset -> file, checked to be
    ``model``'s): every residual index they share, each of ``datasets`` held out in turn
    (``heldout_splits``). The caches are closed again whatever happens."""
    caches = open_caches(paths, model=model)
    try:
        ks = common_layers(caches)
        n_layers = int(next(iter(caches.values())).attrs["n_layers"])
        splits = heldout_splits(datasets, train_datasets)
        log(f"{model or 'model'}: probes {list(kinds)} at k={ks}, {len(splits)} held-out datasets")
        return probe_sweep(centred_layers(caches, ks), cache_labels(caches), splits, kinds=kinds,
                           lr_settings=lr_settings, mm_settings=mm_settings, n_layers=n_layers, log=log)
    finally:
        for c in caches.values():
            c.close()


def paired_centred_layers(caches_a: Mapping, caches_b: Mapping, ks: Iterable[int]):
    """Yield ``(k, acts_a, acts_b)``: two models' centred activations at each ``k``."""
    for k in ks:
        yield (k, {ds: centre(c.resid(k, -1)) for ds, c in caches_a.items()},
               {ds: centre(c.resid(k, -1)) for ds, c in caches_b.items()})


def check_same_statements(caches_a: Mapping, caches_b: Mapping) -> None:
    """Two models' caches of a dataset must hold the same statements in the same order."""
    for ds in caches_a:
        ta, tb = caches_a[ds].texts(), caches_b[ds].texts()
        if ta != tb:
            raise TruthError(f"dataset {ds!r}: the two models' caches hold different statements "
                             f"({caches_a[ds].path} / {caches_b[ds].path})")


def pca_table(acts: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray],
              directions: Mapping[str, np.ndarray]) -> tuple[pd.DataFrame, np.ndarray]:
    """``truth_pca`` as one tidy table: rows ``kind`` = statement (``model`` = whose
    activations, ``row``, ``label``) or direction (``model`` = whose direction; ``pc1``,
    ``pc2`` = its unit vector's coordinates), and the explained variance ratios."""
    _, points, arrows, explained = truth_pca(acts, directions)
    parts = []
    for m, p in points.items():
        parts.append(pd.DataFrame({"kind": "statement", "model": m, "row": np.arange(len(p)),
                                   "label": np.asarray(labels[m]).astype(int), "pc1": p[:, 0], "pc2": p[:, 1]}))
    parts.append(pd.DataFrame({"kind": "direction", "model": list(directions), "row": pd.NA, "label": pd.NA,
                               "pc1": arrows[:, 0], "pc2": arrows[:, 1]}))
    return pd.concat(parts, ignore_index=True), explained
