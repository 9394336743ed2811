"""One style for every figure of the report: one theme, one colour per model (its role's,
the same in every figure), models in the config's (family) order, a width the report can
show, and one way to save (one format and resolution, written atomically, with any unmet
premise (``ptmech.premises``) as a note under the figure)."""

from __future__ import annotations

import os
import textwrap
from typing import Iterable, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.colors import to_rgb  # noqa: E402

from . import premises  # noqa: E402
from .io import atomic_path  # noqa: E402

DPI = 150
MAX_WIDTH = 12.0  # inches: 1,800 px at DPI, what the report shows without shrinking the text away
NOTE_COLOUR = "firebrick"
BASELINE_COLOUR = "#9e9e9e"  # no intervention
# one colour per role, in every figure; roles not named here take the next of OTHER_COLOURS
ROLE_COLOURS = {"base": "#1f77b4", "sft": "#ff7f0e", "instruct": "#2ca02c", "rlhf": "#9467bd", "dpo": "#8c564b"}
OTHER_COLOURS = ("#d62728", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f")

sns.set_theme(style="whitegrid", context="notebook")


def _shade(colour, i: int):
    """The ``i``-th shade of a colour: itself, then darker and lighter in turn."""
    rgb = to_rgb(colour)
    if i == 0:
        return rgb
    t = min(0.6, 0.3 * ((i + 1) // 2))
    toward = (0.0, 0.0, 0.0) if i % 2 else (1.0, 1.0, 1.0)
    return tuple(c + (e - c) * t for c, e in zip(rgb, toward))


def model_colours(models: dict[str, dict]) -> dict[str, tuple]:
    """model -> its colour (``models``: name -> {family, role}, in config order): its role's
    (base blue, SFT orange, instruct green, ...), so a role looks the same in every figure
    and family; a second model of one role in one family gets a darker shade, a third a
    lighter one."""
    others: dict[str, str] = {}
    seen: dict[tuple, int] = {}
    out = {}
    for name, info in models.items():
        role = info["role"]
        base = ROLE_COLOURS.get(role) or others.setdefault(role, OTHER_COLOURS[len(others) % len(OTHER_COLOURS)])
        key = (info["family"], role)
        out[name] = _shade(base, seen.get(key, 0))
        seen[key] = seen.get(key, 0) + 1
    return out


def pair_colour(a: str, b: str, models: dict[str, dict]) -> tuple:
    """The colour of a model pair (base model first): the post-trained model's, or the mix
    of both where neither is a base model."""
    colours = model_colours(models)
    if models[a]["role"] == "base":
        return colours[b]
    return tuple((x + y) / 2 for x, y in zip(colours[a], colours[b]))


def in_model_order(names, models: dict[str, dict]) -> list[str]:
    """``names`` (models of a table) in the config's order, each once."""
    present = set(names)
    return [m for m in models if m in present]


def capped(width: float, height: float) -> tuple[float, float]:
    """A figure size no wider than MAX_WIDTH (the height kept)."""
    return min(width, MAX_WIDTH), height


def save(fig, path: str | os.PathLike, notes: Iterable[str] = ()) -> None:
    """Write ``fig`` to ``path`` as a PNG (tight bounding box, ``DPI``) and close it. Each
    of ``notes`` (unmet premises) is printed in red under the figure, so a figure whose
    premise failed cannot be read without seeing why."""
    notes = [n for n in dict.fromkeys(notes) if n]
    if notes:
        width = max(60, int(fig.get_figwidth() * 14))
        text = "\n".join(textwrap.fill(f"Premise not met: {n}", width) for n in notes)
        fig.text(0.5, 0.0, text, ha="center", va="top", color=NOTE_COLOUR, fontsize=9)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)


def table_notes(table, keys: Sequence[str] = ()) -> list[str]:
    """The distinct unmet premises in a table's ``premise`` column (none if it has none),
    each after the rows it applies to when ``keys`` names the columns that say which
    (e.g. ``source``, ``target``: "a → b, b → a: ...")."""
    return [f"{', '.join(which)}: {premise}" if which else premise
            for premise, which in premises.by_reason(table, keys, sep=" → ")]
