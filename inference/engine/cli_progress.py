"""A tiny text progress bar usable as ``run_benchmark(progress=...)`` in a CLI."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class TextProgressBar:
    """Callable ``(stage, fraction)`` drawing ``[#####.....]  42% stage`` on one line.

    Writes to stderr with ``\\r``; a newline is printed when the fraction reaches 1.0.
    Redraws at most every ``min_interval`` seconds unless the stage changes.
    """

    def __init__(self, width: int = 30, stream: TextIO | None = None, min_interval: float = 0.1):
        self.width = width
        self.stream = stream if stream is not None else sys.stderr
        self.min_interval = min_interval
        self._last_draw = 0.0
        self._last_stage: str | None = None
        self._done = False

    def __call__(self, stage: str, fraction: float) -> None:
        fraction = min(max(float(fraction), 0.0), 1.0)
        now = time.monotonic()
        if (stage == self._last_stage and fraction < 1.0 and now - self._last_draw < self.min_interval) or self._done:
            return
        self._last_draw, self._last_stage = now, stage
        filled = int(round(self.width * fraction))
        bar = "#" * filled + "." * (self.width - filled)
        self.stream.write(f"\r[{bar}] {fraction * 100:5.1f}% {stage:<24}")
        if fraction >= 1.0:
            self.stream.write("\n")
            self._done = True
        self.stream.flush()


def text_progress(stage: str, fraction: float) -> None:
    """Module-level convenience callback sharing one bar per process run."""
    global _BAR
    if _BAR is None or _BAR._done:
        _BAR = TextProgressBar()
    _BAR(stage, fraction)


_BAR: TextProgressBar | None = None
