"""Progress lines for long work: items done, rate, time left."""

from __future__ import annotations

import time
from typing import Callable


class Progress:
    """Call ``update(n)`` as work completes; a line goes to ``log`` at most every
    ``every`` seconds, and always for the last item."""

    def __init__(self, total: int, log: Callable[[str], None], what: str = "items", every: float = 10.0):
        self.total, self.log, self.what, self.every = total, log, what, every
        self.done = 0
        self.start = time.perf_counter()
        self._last = -float("inf")

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def update(self, n: int = 1) -> None:
        self.done += n
        now = self.elapsed
        if now - self._last >= self.every or self.done >= self.total:
            self._last = now
            rate = self.done / now if now > 0 else float("inf")
            left = (self.total - self.done) / rate if rate > 0 else float("inf")
            self.log(f"{self.done}/{self.total} {self.what} done, {rate:.1f} {self.what}/s, "
                     f"{now:.0f}s elapsed, about {left:.0f}s left")
