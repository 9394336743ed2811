"""Architecture discovery (ptmech.architectures.discover): the layout found in the model
itself reproduces every hand-written row of the table, and on 18 architectures that have no
row, built tiny from their config classes, the cache equals what transformers computes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import ARCHS, DISCOVERED, MIXTURES_OF_EXPERTS, SENTENCES
from ptmech import architectures, config as ptcfg
from ptmech.adapter import load_model
from ptmech.cache import Cache, extract
from ptmech.residual import left_pad, residual_at


def _adapter(tiny_model_dir, arch):
    return load_model(arch, {"path": str(tiny_model_dir(arch)), "dtype": "float32", "device": "cpu"})


@pytest.mark.parametrize("arch", ARCHS)
def test_discovery_reproduces_the_table(arch, tiny_model_dir):
    adapter = _adapter(tiny_model_dir, arch)
    assert architectures.discover(adapter.model, arch) == architectures.ARCHITECTURES[adapter.model.config.model_type]


@pytest.mark.parametrize("arch", DISCOVERED)
def test_a_discovered_architecture_passes_the_cache_oracle(arch, tiny_model_dir, tmp_path):
    """The cache at every k < L equals output_hidden_states one prompt at a time, k = L is the
    last block's output before the final norm (the norm found maps it to hidden_states[L]),
    and a left-padded batch gives the same numbers."""
    assert arch not in architectures.ARCHITECTURES
    adapter = _adapter(tiny_model_dir, arch)
    L, pad = adapter.n_layers, adapter.tokenizer.pad_token_id
    out = tmp_path / "acts.h5"
    extract(adapter, SENTENCES[:6], out, positions=[-2, -1], batch_size=4, storage_dtype="float32",
            log=lambda s: None)
    with Cache(out) as cache, torch.inference_mode():
        assert cache.layers == list(range(L + 1))
        for i, text in enumerate(SENTENCES[:6]):
            ids = adapter.encode([text])[0]
            hs = adapter.model(torch.tensor([ids]), output_hidden_states=True).hidden_states
            for k in range(L):
                np.testing.assert_allclose(cache.resid(k)[i], hs[k][0, -2:].numpy(), atol=2e-5, rtol=1e-4)
            last = torch.as_tensor(cache.resid(L)[i])
            torch.testing.assert_close(adapter.final_norm(last), hs[L][0, -2:], atol=2e-5, rtol=1e-4)
            single = residual_at(adapter, *left_pad([ids], pad), layers=[L], positions=[-2, -1])
            torch.testing.assert_close(single[0, 0], last, atol=2e-5, rtol=1e-4)
    assert (adapter.arch.mlp_out is None) == (arch in MIXTURES_OF_EXPERTS)  # no single projection to read
    if adapter.arch.mlp_out is not None:  # the MLP output projection writes d_model
        assert adapter.mlp_out_rows(-1).shape[1] == adapter.d_model
    else:
        with pytest.raises(architectures.UnsupportedArchitecture, match="no single output projection"):
            adapter.mlp_out(-1)


def test_gemma_norm_offset_is_found_by_running_the_norm(tiny_model_dir):
    adapter = _adapter(tiny_model_dir, "gemma3_text")
    assert architectures.discover(adapter.model).norm_offset == 1.0
    assert architectures.discover(_adapter(tiny_model_dir, "llama").model).norm_offset == 0.0


def test_the_parse_checks_an_architecture_off_the_table_on_the_meta_device(tiny_model_dir, tmp_path):
    assert ptcfg.layout_problem(tiny_model_dir("granite")) == ""
    t5 = tmp_path / "t5"
    t5.mkdir()
    (t5 / "config.json").write_text(json.dumps({"model_type": "t5", "d_model": 32, "num_layers": 2}))
    assert "encoder-decoder" in ptcfg.layout_problem(t5)
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "vit"}))
    assert "no causal LM" in ptcfg.layout_problem(bert)
    weird = tmp_path / "weird"
    weird.mkdir()
    (weird / "config.json").write_text(json.dumps({"model_type": "no_such_architecture"}))
    assert "cannot read its config" in ptcfg.layout_problem(weird)
