"""CI's guard on the organism recipe: train the default trio exactly as the default run
does (``recipe.build_trio``, the default config's seed and threads) and check it against
every floor the README promises (``ptmech.organism.floors``): base knowledge, held-out
few-shot TRUE/FALSE and truth probe, no refusals from the base; SFT and instruct refusing
harmful requests only; the instruct model's own refusal direction passing the selection
filters, removing refusal when ablated and inducing it when added. The floors are the same
numbers the workflow's organism rules enforce; ``benchmarks/organism_seeds.py`` measures
how far they hold across seeds and CPU kernels (not yet for every seed: see
docs/organism-recipe.md)."""

from __future__ import annotations

import pytest

from conftest import refusal_defaults
from ptmech.organism import checks, floors, recipe
from ptmech.organism.world import World


@pytest.fixture(scope="module")
def trio_metrics(tmp_path_factory):
    """Every floor metric of the default trio, trained in a temporary folder."""
    root = tmp_path_factory.mktemp("organism")
    recipe.build_trio(root)
    world = World.from_json(root / "world.json")
    return checks.trio_metrics(root, world, refusal_defaults(), root / "activations")


@pytest.mark.parametrize("floor", floors.FLOORS, ids=lambda f: f"{f.model}:{f.metric}")
def test_default_trio_meets_floor(trio_metrics, floor):
    value = trio_metrics[floor.model].get(floor.metric, float("nan"))
    assert floor.holds(value), f"{floor.model}: {floor.metric} = {value}, floor {floor}; all: {trio_metrics}"
