"""Prompt sets: how the rows of a normalised dataset become prompts, and which token
positions of them are read.

A prompt set's definition (config ``prompt_sets.<name>``) has a ``kind``:

* ``statements``: the row's ``statement`` through ``template`` (default
  ``"{statement}"``: the bare statement, as the paper's truth probes use);
* ``instructions``: the row's ``instruction`` through the model's instruction template
  (its chat template for post-trained models, an explicit base template for base models).

``positions`` is ``"last"``, ``{"last_n": n}``, a list of negative indices, or
``"post_instruction"``: the template's tokens after the instruction plus the
instruction's own last token (where the paper reads its base models).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from .adapter import ModelAdapter

TEXT_COLUMN = {"statements": "statement", "instructions": "instruction"}


def render(adapter: ModelAdapter, table: pd.DataFrame, prompt_set: dict) -> list[str]:
    kind = prompt_set["kind"]
    if kind == "statements":
        template = prompt_set.get("template", "{statement}")
        return [template.format(**row) for row in table.to_dict("records")]
    if kind == "instructions":
        return [adapter.render_instruction(x) for x in table["instruction"]]
    raise ValueError(f"unknown prompt set kind {kind!r}")


def positions(adapter: ModelAdapter, spec: Any) -> list[int]:
    """Negative token positions for a ``positions`` spec (see the module docstring)."""
    if spec == "last":
        return [-1]
    if spec == "post_instruction":
        n = adapter.n_post_instruction_tokens() + 1
        return list(range(-n, 0))
    if isinstance(spec, dict) and "last_n" in spec:
        return list(range(-int(spec["last_n"]), 0))
    if isinstance(spec, list) and spec and all(isinstance(p, int) and p < 0 for p in spec):
        return sorted(set(spec))
    raise ValueError(f"positions must be 'last', 'post_instruction', {{last_n: n}} or a list of "
                     f"negative integers, got {spec!r}")
