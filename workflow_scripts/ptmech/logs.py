"""Logging for rule scripts: everything (our lines, library warnings, tracebacks) goes
to the job's log file, so `tail -f logs/...` shows progress."""

from __future__ import annotations

import logging
import sys


def to_file(path: str) -> logging.Logger:
    """Send logging, stdout and stderr of this process to ``path``; return a logger."""
    stream = open(path, "a", buffering=1)
    sys.stdout = sys.stderr = stream
    logging.basicConfig(stream=stream, level=logging.INFO, force=True,
                        format="%(asctime)s %(levelname)s %(message)s")
    return logging.getLogger("ptmech")
