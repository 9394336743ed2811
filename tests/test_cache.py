"""Oracle tests for the adapter and the activation cache: the cache must equal what
transformers itself computes, whatever the batching."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import ARCHS, SENTENCES
from ptmech.adapter import load_model
from ptmech.cache import Cache, CacheError, extract
from ptmech.residual import left_pad, residual_at


def _adapter(tiny_model_dir, arch):
    return load_model(arch, {"path": str(tiny_model_dir(arch)), "dtype": "float32", "device": "cpu"})


@pytest.mark.parametrize("arch", ARCHS)
def test_cache_equals_hidden_states_one_prompt_at_a_time(arch, tiny_model_dir, tmp_path):
    adapter = _adapter(tiny_model_dir, arch)
    L = adapter.n_layers
    out = tmp_path / "acts.h5"
    extract(adapter, SENTENCES, out, positions=[-2, -1], batch_size=4, storage_dtype="float32",
            log=lambda s: None)
    last_block = {}
    adapter.blocks[-1].register_forward_hook(lambda m, a, o: last_block.__setitem__("x", o))
    with Cache(out) as c:
        assert c.layers == list(range(L + 1))
        for i, text in enumerate(SENTENCES):
            ids = torch.tensor([adapter.encode([text])[0]])
            with torch.no_grad():
                hs = adapter.model(ids, output_hidden_states=True).hidden_states
            for k in range(L):
                np.testing.assert_allclose(c.resid(k)[i], hs[k][0, -2:].numpy(), atol=1e-5, rtol=1e-5)
            # k = L is the last block's output *before* the final norm, not hidden_states[L].
            np.testing.assert_allclose(c.resid(L)[i], last_block["x"][0, -2:].numpy(), atol=1e-5, rtol=1e-5)
            assert not np.allclose(c.resid(L)[i], hs[L][0, -2:].numpy(), atol=1e-3)


@pytest.mark.parametrize("arch", ARCHS)
def test_batch_of_8_with_left_padding_equals_batch_of_1(arch, tiny_model_dir):
    adapter = _adapter(tiny_model_dir, arch)
    ids = adapter.encode(SENTENCES[:8])
    assert len({len(x) for x in ids}) > 3  # mixed lengths, so padding matters
    layers = list(range(adapter.n_layers + 1))
    pad = adapter.tokenizer.pad_token_id
    with torch.inference_mode():
        batched = residual_at(adapter, *left_pad(ids, pad), layers=layers, positions=[-2, -1])
        for i, x in enumerate(ids):
            single = residual_at(adapter, *left_pad([x], pad), layers=layers, positions=[-2, -1])
            torch.testing.assert_close(batched[i], single[0], atol=1e-5, rtol=1e-5)


def test_cache_round_trip_order_labels_and_attrs(tiny_model_dir, tmp_path):
    adapter = _adapter(tiny_model_dir, "llama")
    out = tmp_path / "a.h5"
    labels = np.arange(len(SENTENCES)) % 2
    extract(adapter, SENTENCES, out, positions=[-1], layers=[0, 2], batch_size=3,
            labels={"label": labels}, attrs={"prompt_set": "statements"}, log=lambda s: None)
    with Cache(out, expect={"model": "llama", "positions": [-1]}) as c:
        assert c.texts() == SENTENCES
        np.testing.assert_array_equal(c.label("label"), labels)
        np.testing.assert_array_equal(c.rows, np.arange(len(SENTENCES)))
        assert [list(x) for x in c.input_ids()] == adapter.encode(SENTENCES)
        assert c.resid(2).shape == (len(SENTENCES), 1, adapter.d_model)
        assert c.resid(2, -1).shape == (len(SENTENCES), adapter.d_model)
        assert c.attrs["storage_dtype"] == "float16" and c.attrs["prompt_set"] == "statements"
        with pytest.raises(CacheError, match="k=1 not cached"):
            c.resid(1)
    with pytest.raises(CacheError, match="model is .llama., expected .other."):
        Cache(out, expect={"model": "other"})


def test_float16_storage_is_close_to_float32(tiny_model_dir, tmp_path):
    adapter = _adapter(tiny_model_dir, "gpt2")
    kw = dict(positions=[-1], batch_size=4, log=lambda s: None)
    extract(adapter, SENTENCES, tmp_path / "16.h5", storage_dtype="float16", **kw)
    extract(adapter, SENTENCES, tmp_path / "32.h5", storage_dtype="float32", **kw)
    with Cache(tmp_path / "16.h5") as a, Cache(tmp_path / "32.h5") as b:
        assert a._f["resid"].dtype == np.float16 and b._f["resid"].dtype == np.float32
        np.testing.assert_allclose(a.resid(3), b.resid(3), rtol=2e-3, atol=2e-3)


def test_non_finite_activation_is_an_error_and_leaves_no_file(tiny_model_dir, tmp_path):
    adapter = _adapter(tiny_model_dir, "llama")
    with torch.no_grad():
        adapter.blocks[1].mlp.down_proj.weight.mul_(1e12)  # overflows float16, not float32
    out = tmp_path / "x.h5"
    with pytest.raises(CacheError, match="non-finite activation in float16 storage"):
        extract(adapter, SENTENCES, out, positions=[-1], log=lambda s: None)
    assert not out.exists() and not list(tmp_path.iterdir())


def test_too_short_prompt_is_an_error(tiny_model_dir, tmp_path):
    adapter = _adapter(tiny_model_dir, "llama")
    with pytest.raises(CacheError, match="fewer than the 5 positions"):
        extract(adapter, ["three four"], tmp_path / "x.h5", positions=[-5, -4, -3, -2, -1], log=lambda s: None)


@pytest.mark.parametrize("content,match", [
    (b"", "not a readable HDF5 file"),
    (b"statement,label\nfoo,1\n", "not a readable HDF5 file"),
])
def test_foreign_files_are_reported_by_name(tmp_path, content, match):
    path = tmp_path / "bad.h5"
    path.write_bytes(content)
    with pytest.raises(CacheError, match=match) as e:
        Cache(path)
    assert str(path) in str(e.value)
    assert "delete it and rerun snakemake" in str(e.value)  # and says how to recover


def test_truncated_and_foreign_hdf5(tiny_model_dir, tmp_path):
    import h5py

    adapter = _adapter(tiny_model_dir, "llama")
    good = tmp_path / "good.h5"
    extract(adapter, SENTENCES, good, positions=[-1], log=lambda s: None)
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CacheError, match="truncated.h5"):
        Cache(truncated).resid(1)
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(CacheError, match="not a ptmech activation cache.*delete it and rerun snakemake"):
        Cache(foreign)


@pytest.mark.parametrize("reader", ["cache", "sources", "patching"])
def test_every_activation_file_is_opened_and_checked_one_way(tmp_path, reader):
    """The cache, the patching sources and the patching results share one reader
    (ptmech.h5.open_checked): each names the file when it is of another format, when it
    was never completed, or when an attribute differs from what its reader expects."""
    import h5py

    from ptmech.knowledge import patching

    fmt, dataset, error, open_ = {
        "cache": ("ptmech-activations/1", "resid", CacheError, lambda p, **kw: Cache(p, **kw)),
        "sources": (patching.SOURCES_FORMAT, "true_resid", patching.PatchingError, lambda p, **kw: patching.Sources(p, **kw)),
        "patching": (patching.PATCHING_FORMAT, "ld", patching.PatchingError, lambda p, **kw: patching.read_patching(p)),
    }[reader]

    def write(name, **attrs):
        path = tmp_path / name
        with h5py.File(path, "w") as f:
            f[dataset] = np.zeros((1, 1, 1, 1), dtype=np.float32)
            f.attrs.update(attrs)
        return path

    other = write("other.h5", format="someone-else/1", complete=True)
    with pytest.raises(error, match=rf"other.h5: not a .* \(format attribute 'someone-else/1', expected '{fmt}'\)"):
        open_(other)
    unfinished = write("unfinished.h5", format=fmt, complete=False)
    with pytest.raises(error, match=r"unfinished.h5: incomplete"):
        open_(unfinished)
    if reader != "patching":  # the results reader expects nothing of its attributes
        wrong = write("wrong.h5", format=fmt, complete=True, model="a")
        with pytest.raises(error, match=r"wrong.h5: model is 'a', expected 'b'"):
            open_(wrong, expect={"model": "b"})
