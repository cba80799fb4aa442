"""Progress with an ETA for long commands (sweep, simulate --repeats, run, calibrate, validate).

On a terminal: a tqdm bar on stderr. Otherwise (CI logs, files, pipes): one plain line at most every
``every_s`` seconds and one at the end, so a log stays readable and greppable. Work that finishes within
``every_s`` (or is a single unit) prints nothing: a quick command's output stays what it was.
"""

from __future__ import annotations

import os
import sys
import time
from typing import TextIO

from tqdm import tqdm

PLAIN_EVERY_S = float(os.environ.get("PALSGD_PROGRESS_EVERY_S", "10"))
"""Seconds between plain lines; the environment variable lets a CI job ask for more or fewer."""


class Progress:
    """Count ``total`` units of work; ``update(n)`` as they finish; ``close()`` (or ``with``) at the end."""

    def __init__(self, total: int, what: str, unit: str = "points", *, stream: TextIO | None = None,
                 every_s: float = PLAIN_EVERY_S):
        self.total, self.what, self.unit, self.every_s = total, what, unit, every_s
        self.stream = stream if stream is not None else sys.stderr
        self.done = 0
        self.start_s = self.last_line_s = time.monotonic()
        self.bar = None
        self.printed = False
        if total > 1 and _is_terminal(self.stream):
            self.bar = tqdm(total=total, desc=what, unit=f" {unit}", file=self.stream, dynamic_ncols=True)

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            return
        now = time.monotonic()
        if now - self.last_line_s >= self.every_s and self.done < self.total:
            self.last_line_s = now
            self._line(now)

    def close(self, failed: bool = False) -> None:
        """End the bar, or print the last plain line; none after a failure, whose message stands alone."""
        if self.bar is not None:
            self.bar.close()
        elif not failed and (self.printed or time.monotonic() - self.start_s >= self.every_s):
            self._line(time.monotonic())

    def _line(self, now: float) -> None:
        self.printed = True
        elapsed_s = now - self.start_s
        share = self.done / self.total if self.total else 1.0
        eta = f", ETA {_human_s(elapsed_s / share - elapsed_s)}" if 0 < share < 1 else ""
        print(f"{self.what}: {self.done}/{self.total} {self.unit} ({share:.0%}), {_human_s(elapsed_s)} elapsed"
              f"{eta}", file=self.stream, flush=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type, *_) -> None:
        self.close(failed=exc_type is not None)


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or file-less stream
        return False


def _human_s(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 120:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.0f} s"
