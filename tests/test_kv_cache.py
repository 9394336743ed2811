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
