"""Confidence: entropy neurons of the last MLP layer (METHODS.md §6), from weights and by
ablation.

**From weights** (the paper, after Stolfo et al.'s confidence-regulation-neurons). The
weights are read as TransformerLens's default processing leaves them (§6.1):

* ``w_i`` [d_model]: what last-layer neuron ``i`` writes to the residual stream (row ``i`` of
  ``W_out[-1]``); for LayerNorm models TL centres writing weights over ``d_model``, for
  RMSNorm models it does not;
* ``U`` [d_model, V]: the unembedding with the final norm's gain folded in
  (``diag(g) W_U^T``), for LayerNorm models centred over ``d_model`` (it reads a centred
  residual), then centred over the vocabulary.

``norm_i = ||w_i||`` and ``LogitVar_i`` = variance over the vocabulary (unbiased) of
``cos(w_i, U[:, v])``. An *entropy neuron* has a large norm and a low LogitVar: it writes a
large vector that the unembedding maps to nearly the same logit for every token, so it acts
on confidence only through the final norm's scale. The [d_mlp, V] cosine matrix is built in
vocabulary chunks (Llama-3.1's is 7.4 GB in fp32).

**Selection** (§6.3): candidates have a norm strictly above the (1 - p) quantile of norms;
the ``n`` candidates with the lowest LogitVar are the entropy neurons (paper: p = 0.25,
n = 10). Two models' sets are compared by IoU.

**Ablation** (beyond the paper's code, Stolfo et al.'s protocol): neuron ``i``'s activation
(the input of the last MLP's output projection) is replaced by its mean over a text set, and
the change in next-token entropy and loss is measured with everything after the last MLP
recomputed (*total effect*) and with the final norm's scale frozen at its clean value for
each token (*direct effect*: the neuron's change reaches the logits through the unembedding
only).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from ..adapter import ModelAdapter, block_output
from ..progress import Progress
from ..residual import hooked, left_pad

DEFAULT_CHUNK = 8192


# ------------------------------------------------------------------------------ weights

def is_layernorm(norm: torch.nn.Module) -> bool:
    """Whether a norm module centres its input (LayerNorm: GPT-2, GPT-NeoX) rather than
    only rescaling it (RMSNorm: Llama, Mistral, Qwen, Gemma, OLMo 2, Phi-3). Another class
    (e.g. Cohere's or OLMo's own LayerNorm) is run: a centring norm ignores a constant added
    to every coordinate."""
    if isinstance(norm, torch.nn.LayerNorm):
        return True
    if "rmsnorm" in type(norm).__name__.lower():
        return False
    p = next(norm.parameters(), None)
    device, dtype = (p.device, p.dtype) if p is not None else ("cpu", torch.float32)
    width = p.shape[-1] if p is not None else (getattr(norm, "normalized_shape", None) or [None])[-1]
    if width is None:
        return False
    x = torch.randn(3, width, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        x = x.to(device, dtype)
        return bool(torch.allclose(norm(x).float(), norm(x + 5.0).float(), atol=1e-3, rtol=1e-3))


def writing_weights(w_out: torch.Tensor, centre: bool) -> torch.Tensor:
    """[d_mlp, d_model] float32 output rows, centred over ``d_model`` when ``centre`` (TL's
    ``center_writing_weights``, which it applies to LayerNorm models only)."""
    w = w_out.detach().float()
    return w - w.mean(-1, keepdim=True) if centre else w


def _unembed_chunk(w_u: torch.Tensor, gain: torch.Tensor, centre_d: bool) -> torch.Tensor:
    """[c, d_model] float32 rows of ``diag(g) W_U^T`` (transposed), optionally centred over d."""
    u = w_u.detach().float() * gain
    return u - u.mean(-1, keepdim=True) if centre_d else u


def _f32(t: torch.Tensor) -> torch.Tensor:
    """``t`` in float32, or float64 if it already is."""
    return t if t.dtype == torch.float64 else t.float()


def _chunks(n: int, size: int):
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def vocab_mean(w_u: torch.Tensor, gain: torch.Tensor, centre_d: bool,
               chunk_size: int = DEFAULT_CHUNK) -> torch.Tensor:
    """[d_model] float32 mean over the vocabulary of the gain-folded (and, for LayerNorm
    models, d-centred) unembedding: what centring over the vocabulary subtracts."""
    gain = gain.detach().float().to(w_u.device)
    total = torch.zeros(w_u.shape[1], dtype=torch.float64, device=w_u.device)
    for sl in _chunks(w_u.shape[0], chunk_size):
        total += _unembed_chunk(w_u[sl], gain, centre_d).double().sum(0)
    return (total / w_u.shape[0]).float()


def centred_unembedding(w_u: torch.Tensor, gain: torch.Tensor, centre_d: bool) -> torch.Tensor:
    """[d_model, V] float32 ``U`` as TransformerLens's default processing leaves it: final
    norm gain folded in, centred over ``d_model`` for LayerNorm models, then centred over the
    vocabulary. One-shot (memory V x d_model); the statistics use chunks instead.

    ``w_u`` [V, d_model] is the lm_head weight, ``gain`` [d_model] the final norm's
    effective scale."""
    u = _unembed_chunk(w_u, gain.detach().float().to(w_u.device), centre_d)
    return (u - u.mean(0, keepdim=True)).T


def logit_var(w_out: torch.Tensor, w_u: torch.Tensor, gain: torch.Tensor, centre: bool,
              chunk_size: int = DEFAULT_CHUNK) -> torch.Tensor:
    """LogitVar_i: [d_mlp] float64 variance over the vocabulary (unbiased) of the cosine
    between ``w_i`` and each column of the centred unembedding ``U``.

    ``w_out`` [d_mlp, d_model] raw output rows; ``w_u`` [V, d_model] lm_head weight;
    ``gain`` [d_model]; ``centre``: LayerNorm model (writing and reading weights centred
    over d_model). Peak memory is d_mlp x ``chunk_size`` cosines; per-chunk means and sums
    of squared deviations are merged exactly (Chan et al.)."""
    device = w_u.device
    w = writing_weights(w_out, centre).to(device)
    w_hat = w / w.norm(dim=-1, keepdim=True).clamp_min(1e-30)
    g = gain.detach().float().to(device)
    mu = vocab_mean(w_u, g, centre, chunk_size)
    count, mean, m2 = 0, None, None
    for sl in _chunks(w_u.shape[0], chunk_size):
        u = _unembed_chunk(w_u[sl], g, centre) - mu                      # [c, d]
        u_hat = u / u.norm(dim=-1, keepdim=True).clamp_min(1e-30)
        cos = (w_hat @ u_hat.T).double()                                 # [d_mlp, c]
        n_b, mean_b = cos.shape[1], cos.mean(1)
        m2_b = ((cos - mean_b[:, None]) ** 2).sum(1)
        if mean is None:
            count, mean, m2 = n_b, mean_b, m2_b
            continue
        total = count + n_b
        delta = mean_b - mean
        mean = mean + delta * (n_b / total)
        m2 = m2 + m2_b + delta ** 2 * (count * n_b / total)
        count = total
    return (m2 / (count - 1)).cpu()


def neuron_statistics(w_out: torch.Tensor, w_u: torch.Tensor, gain: torch.Tensor, centre: bool,
                      chunk_size: int = DEFAULT_CHUNK) -> pd.DataFrame:
    """One row per last-layer neuron: ``neuron``, ``norm`` (||w_i||, float64), ``logit_var``
    and ``norm_log_var_ratio`` (norm / ln max(1e-10, LogitVar), stored as the paper does,
    unused for selection). Arguments as :func:`logit_var`."""
    norm = writing_weights(w_out, centre).double().norm(dim=-1).cpu()
    var = logit_var(w_out, w_u, gain, centre, chunk_size)
    return pd.DataFrame({
        "neuron": np.arange(len(norm)),
        "norm": norm.numpy(),
        "logit_var": var.numpy(),
        "norm_log_var_ratio": (norm / torch.log(var.clamp_min(1e-10))).numpy(),
    })


@torch.inference_mode()
def model_neuron_statistics(adapter: ModelAdapter, chunk_size: int = DEFAULT_CHUNK) -> pd.DataFrame:
    """:func:`neuron_statistics` of a loaded model's last MLP layer, from its weights only
    (nothing is run on text)."""
    return neuron_statistics(adapter.mlp_out_rows(-1), adapter.unembed_weight, adapter.final_norm_gain(),
                             is_layernorm(adapter.final_norm), chunk_size)


# ------------------------------------------------------------------------------ selection
# (ptmech.confidence.selection: plain arrays and tables, no torch; re-exported here)
from .selection import (IOU_COLUMNS, ablation_neurons, entropy_neurons, iou, iou_grid,  # noqa: E402,F401
                        norm_candidates, selection_grid, spread_rows, venn_regions)


# ------------------------------------------------------------------------------ ablation

@dataclass
class FinalNorm:
    """The final norm written as ``gain * centre(x) / scale(x) + bias`` so that its scale
    can be frozen: ``scale(x) = sqrt(mean_d(centre(x)^2) + eps)``; ``centre`` subtracts the
    mean over d_model for LayerNorm and is the identity for RMSNorm."""

    gain: torch.Tensor          # [d_model] effective scale (Gemma's 1 + weight included)
    bias: torch.Tensor | None   # [d_model] or None
    eps: float
    centred: bool

    @classmethod
    def of(cls, adapter: ModelAdapter) -> "FinalNorm":
        norm = adapter.final_norm
        eps = getattr(norm, "eps", None)
        if eps is None:
            eps = getattr(norm, "variance_epsilon", None)
        bias = getattr(norm, "bias", None)
        out = cls(gain=_f32(adapter.final_norm_gain().detach()),
                  bias=None if bias is None else _f32(bias.detach()), eps=float(1e-5 if eps is None else eps),
                  centred=is_layernorm(norm))
        # the direct effect needs the norm as a formula; check it is this model's norm
        p = next(adapter.model.parameters())
        x = 3 * torch.randn(4, adapter.d_model, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            theirs = _f32(norm(x.to(p.device, p.dtype)))
        if not torch.allclose(out(x.to(p.device, p.dtype)).to(theirs.device), theirs, atol=1e-3, rtol=1e-3):
            raise ValueError(f"model {adapter.name!r}: its final norm {type(norm).__name__} is not a LayerNorm or "
                             f"RMSNorm of gain, bias and epsilon ptmech can read, which the confidence stage needs")
        return out

    def centre(self, x: torch.Tensor) -> torch.Tensor:
        return x - x.mean(-1, keepdim=True) if self.centred else x

    def scale(self, x: torch.Tensor) -> torch.Tensor:
        """[..., 1] float32 the norm's denominator for residual ``x`` [..., d_model]."""
        c = self.centre(_f32(x))
        return torch.sqrt(c.pow(2).mean(-1, keepdim=True) + self.eps)

    def __call__(self, x: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        """float32 (float64 for float64 ``x``) normalised ``x``, with the given ``scale``
        instead of its own if set."""
        x = _f32(x)
        out = self.gain.to(x.device) * self.centre(x) / (self.scale(x) if scale is None else scale)
        return out if self.bias is None else out + self.bias.to(x.device)


def logits_of(adapter: ModelAdapter, normed: torch.Tensor) -> torch.Tensor:
    """float32 logits from the final norm's output [..., d_model], as the model computes
    them (with its logit rescaling, ``ModelAdapter.rescale_logits``)."""
    head = adapter.unembed
    return adapter.rescale_logits(_f32(head(normed.to(head.weight.device, head.weight.dtype))))


def token_entropy_and_loss(logits: torch.Tensor, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Next-token entropy (nats) [B, S] at every position, and loss [B, S - 1] (negative
    log-probability of the next token) at positions 0..S-2, from logits [B, S, V]."""
    logp = F.log_softmax(_f32(logits), dim=-1)
    entropy = -(logp.exp() * logp).sum(-1)
    loss = -logp[:, :-1].gather(-1, input_ids[:, 1:, None].to(logp.device)).squeeze(-1)
    return entropy, loss


def _batches(ids: list[list[int]], batch_size: int):
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    for start in range(0, len(order), batch_size):
        yield [ids[i] for i in order[start:start + batch_size]]


@torch.inference_mode()
def mean_activations(adapter: ModelAdapter, ids: list[list[int]], batch_size: int = 8) -> torch.Tensor:
    """[d_mlp] float64 mean activation of each last-layer neuron (the input of the last
    MLP's output projection) over every real token of the token-id lists ``ids``."""
    state = {"total": None, "mask": None}
    count = 0

    def grab(module, args, kwargs):
        a = args[0].reshape(*state["mask"].shape, -1)  # OPT runs its MLP on [B * S, d] rows
        s = (a.double() * state["mask"][..., None]).sum((0, 1))
        state["total"] = s if state["total"] is None else state["total"] + s

    for batch in _batches(ids, batch_size):
        input_ids, mask, pos = left_pad(batch, adapter.tokenizer.pad_token_id, adapter.device)
        state["mask"] = mask.double()
        with hooked([(adapter.mlp_out(-1), "pre", grab)]):
            adapter.backbone(input_ids=input_ids, attention_mask=mask, position_ids=pos, use_cache=False)
        count += int(mask.sum())
    total = state["total"]
    return (total / count).cpu()


def _ablate(neuron: int, value: float):
    def fn(module, args, kwargs):
        a = args[0].clone()
        a[..., neuron] = value
        return (a,) + tuple(args[1:]), kwargs
    return fn


EFFECTS = ("total", "direct")
METRICS = ("entropy", "loss")


@torch.inference_mode()
def ablation_effects(adapter: ModelAdapter, ids: list[list[int]], neurons: Sequence[int],
                     means: torch.Tensor, batch_size: int = 8,
                     log: Callable[[str], None] | None = None) -> pd.DataFrame:
    """Mean-ablate each of ``neurons`` in the last MLP layer (activation := ``means[i]``)
    and measure the change in next-token entropy and loss, averaged over every real token
    of ``ids`` (entropy) / every real token with a real successor (loss).

    The clean run is done once per batch; for each neuron only the last decoder block is
    re-run (replaying its recorded inputs) with the neuron ablated, which gives the new
    pre-norm residual ``x'``. Total effect: logits of ``final_norm(x')``. Direct effect:
    logits of the final norm of ``x'`` with the clean token's scale (the RMS / LayerNorm
    denominator), so the neuron's change reaches the logits only through the unembedding.
    Clean, total and direct logits all go through :class:`FinalNorm` (float32, or float64
    for a float64 model), so the three differ by the ablation only, not by rounding.

    Returns one row per (neuron, effect, metric): ``clean`` and ``ablated`` means,
    ``change`` (mean of ablated - clean), ``abs_change`` (mean |ablated - clean|),
    ``n_tokens``, and ``mean_activation``."""
    neurons = [int(i) for i in neurons]
    norm = FinalNorm.of(adapter)
    block, proj = adapter.blocks[-1], adapter.mlp_out(-1)
    pad = adapter.tokenizer.pad_token_id
    keys = [(i, e, m) for i in neurons for e in EFFECTS for m in METRICS]
    sums = {k: torch.zeros(3, dtype=torch.float64) for k in keys}   # clean, ablated, |change|
    counts = {m: 0 for m in METRICS}
    progress = Progress(len(ids), log, "texts") if log else None
    for batch in _batches(ids, batch_size):
        input_ids, mask, pos = left_pad(batch, pad, adapter.device)
        recorded = {}

        def record_in(module, args, kwargs):
            recorded["args"], recorded["kwargs"] = args, kwargs

        def record_out(module, args, output):
            recorded["x"] = block_output(output)

        with hooked([(block, "pre", record_in), (block, "forward", record_out)]):
            adapter.backbone(input_ids=input_ids, attention_mask=mask, position_ids=pos, use_cache=False)
        x = recorded["x"]
        scale = norm.scale(x)
        clean_h, clean_l = token_entropy_and_loss(logits_of(adapter, norm(x)), input_ids)
        real = mask.bool().to(clean_h.device)   # the unembedding's device (device_map models)
        where = {"entropy": real, "loss": real[:, :-1] & real[:, 1:]}
        clean = {"entropy": clean_h, "loss": clean_l}
        for m in METRICS:
            counts[m] += int(where[m].sum())
        for i in neurons:
            with hooked([(proj, "pre", _ablate(i, float(means[i])))]):
                x_abl = block_output(block(*recorded["args"], **recorded["kwargs"]))
            logits = {"total": logits_of(adapter, norm(x_abl)),
                      "direct": logits_of(adapter, norm(x_abl, scale=scale))}
            for e in EFFECTS:
                h, l = token_entropy_and_loss(logits[e], input_ids)
                for m, new in (("entropy", h), ("loss", l)):
                    sel = where[m]
                    old = clean[m][sel].double()
                    new = new[sel].double()
                    sums[(i, e, m)] += torch.stack([old.sum(), new.sum(), (new - old).abs().sum()]).cpu()
        if progress:
            progress.update(len(batch))
    rows = []
    for (i, e, m), s in sums.items():
        c = max(counts[m], 1)
        clean_mean, abl_mean, abs_mean = (s / c).tolist()
        rows.append({"neuron": i, "effect": e, "metric": m, "clean": clean_mean, "ablated": abl_mean,
                     "change": abl_mean - clean_mean, "abs_change": abs_mean, "n_tokens": counts[m],
                     "mean_activation": float(means[i])})
    return pd.DataFrame(rows)


def text_token_ids(adapter: ModelAdapter, texts: Sequence[str], max_tokens: int | None = None) -> list[list[int]]:
    """Token ids of each text (BOS once), cut to ``max_tokens``; texts of fewer than two
    tokens (no next token to predict) are dropped."""
    ids = adapter.encode(list(texts))
    if max_tokens:
        ids = [x[:max_tokens] for x in ids]
    return [x for x in ids if len(x) >= 2]
