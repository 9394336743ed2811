"""Saving figures: one format and resolution for every figure of the report, written
atomically, with any unmet premise (``ptmech.premises``) as a note under the figure."""

from __future__ import annotations

import os
import textwrap
from typing import Iterable, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from . import premises  # noqa: E402
from .io import atomic_path  # noqa: E402

DPI = 150
NOTE_COLOUR = "firebrick"


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
