"""The command-line progress bar of every DefectBench command (benchmark, dataset import)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class TextProgressBar:
    """Callable ``(stage, fraction, detail="")`` drawing ``[#####.....]  42.0% stage detail``.

    On a terminal the line is redrawn in place (``\\r``) at most every ``min_interval``
    seconds, and ends with a newline when the fraction reaches 1.0. Anywhere else (a CI
    log, a file) ``\\r`` would run the updates together, so a whole line is written only
    when the stage changes, at each further tenth of the way and at the end.
    """

    def __init__(self, width: int = 30, stream: TextIO | None = None, min_interval: float = 0.1,
                 interactive: bool | None = None):
        self.width = width
        self.stream = stream if stream is not None else sys.stderr
        self.min_interval = min_interval
        if interactive is None:
            isatty = getattr(self.stream, "isatty", None)
            interactive = bool(isatty and isatty())
        self.interactive = interactive
        self._last_draw = 0.0
        self._last_stage: str | None = None
        self._last_tenth = -1
        self._done = False

    def _due(self, stage: str, fraction: float) -> bool:
        if self._done:
            return False
        if stage != self._last_stage or fraction >= 1.0:
            return True
        if self.interactive:
            return time.monotonic() - self._last_draw >= self.min_interval
        return int(fraction * 10) > self._last_tenth

    def __call__(self, stage: str, fraction: float, detail: str = "") -> None:
        fraction = min(max(float(fraction), 0.0), 1.0)
        if not self._due(stage, fraction):
            return
        self._last_draw, self._last_stage, self._last_tenth = time.monotonic(), stage, int(fraction * 10)
        filled = int(round(self.width * fraction))
        line = f"[{'#' * filled}{'.' * (self.width - filled)}] {fraction * 100:5.1f}% {stage} {detail}".rstrip()
        if self.interactive:
            self.stream.write(f"\r{line:<{self.width + 40}}" + ("\n" if fraction >= 1.0 else ""))
        else:
            self.stream.write(line + "\n")
        self._done = fraction >= 1.0
        self.stream.flush()


def file_progress(label: str, stream: TextIO | None = None):
    """A ``progress(done, total)`` callback (dataset import) drawing a :class:`TextProgressBar`."""
    bar = TextProgressBar(stream=stream)

    def progress(done: int, total: int) -> None:
        bar(label, done / total if total else 1.0, f"{done}/{total} files")

    return progress
