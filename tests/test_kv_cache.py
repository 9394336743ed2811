"""The key/value cache is passed and read under the name the installed transformers uses:
generation and patching run without transformers' deprecation warning for past_key_values
(the name goes in transformers 5.40), and give what a run without the cache gives."""

import logging

import torch

from ptmech import generation
from ptmech.adapter import load_model
from ptmech.knowledge import patching


class Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_generation_and_patching_use_the_current_cache_name(tiny_model_dir):
    adapter = load_model("llama", {"path": str(tiny_model_dir("llama")), "dtype": "float32", "device": "cpu"})
    ids = [adapter.encode(["the city of is in"])[0], adapter.encode(["seven is smaller than nine"])[0]]
    handler, root = Records(), logging.getLogger("transformers")
    logging.Logger.warning_once.cache_clear()  # transformers warns once per process otherwise
    root.addHandler(handler)
    try:
        cached = generation.greedy(adapter, ids, max_new_tokens=4)
        false_ids = ids[1]
        acts = torch.randn(adapter.n_layers, 2, adapter.d_model)
        grid = patching.patch_grid(adapter, false_ids, acts, (5, 6), batch_size=4)
    finally:
        root.removeHandler(handler)
    assert not [m for m in handler.messages if "deprecated" in m], handler.messages
    uncached = generation.greedy(adapter, ids, max_new_tokens=4, use_cache=False)
    assert torch.equal(cached.tokens, uncached.tokens)
    loop = patching.patch_grid_loop(adapter, false_ids, acts, (5, 6))
    torch.testing.assert_close(grid, loop, atol=1e-5, rtol=1e-5)


def test_repeat_cache_repeats_rows_keeps_a_prefix_and_leaves_the_original(tiny_model_dir):
    """``repeat_cache`` gives what ``deepcopy`` + ``crop`` + ``batch_repeat_interleave`` give,
    on a full-attention cache (stride-0 views) and a sliding-window one (copies), for one
    row and for several, and never changes the cache it was given."""
    import copy

    from ptmech.adapter import kv_cache, repeat_cache

    for arch in ("llama", "mistral"):
        adapter = load_model(arch, {"path": str(tiny_model_dir(arch)), "dtype": "float32", "device": "cpu"})
        for rows in (1, 2):
            ids = torch.arange(3, 10).repeat(rows, 1) + torch.arange(rows)[:, None]
            cache = kv_cache(adapter.model(input_ids=ids, use_cache=True))
            before = [(layer.keys.clone(), layer.values.clone()) for layer in cache.layers]
            expected = copy.deepcopy(cache)
            expected.crop(-3)
            expected.batch_repeat_interleave(4)
            got = repeat_cache(cache, 4, length=4)
            assert len(got.layers) == len(expected.layers)
            for g, e in zip(got.layers, expected.layers):
                assert torch.equal(g.keys, e.keys) and torch.equal(g.values, e.values)
            assert got.get_seq_length() == 4
            for layer, (k, v) in zip(cache.layers, before):
                assert torch.equal(layer.keys, k) and torch.equal(layer.values, v)
