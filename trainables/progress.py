"""A progress line for long loops: a live bar on a terminal, plain lines in logs."""

from __future__ import annotations

import sys
import time
from typing import TextIO


def duration(seconds: float) -> str:
    """1 h 20 min, 4 min, 40 s: every time span the project prints (progress lines, the
    live view, forecasts, the budget) reads the same way."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    minutes = round(seconds / 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min"


def format_rate(value: float) -> str:
    """A rate people can read at any speed: whole numbers from 100 up, else 3 significant
    digits (a slow model's 0.042 samples/s must not print as 0)."""
    return f"{value:.0f}" if value >= 100 else f"{value:.3g}"


class Progress:
    """Counts files and frames; redraws in place on a TTY, else prints every `every` files."""

    def __init__(
        self,
        label: str,
        total_files: int,
        stream: TextIO | None = None,
        every: int | None = None,
        enabled: bool = True,
        unit: str = "files",
    ):
        self.label, self.unit = label, unit
        self.total = total_files
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.every = every or max(1, total_files // 10)
        self.enabled = enabled and total_files > 0
        self.files = 0
        self.frames = 0
        self.start = time.monotonic()

    def line(self) -> str:
        elapsed = time.monotonic() - self.start
        rate = self.frames / elapsed if elapsed > 0 else 0.0
        left = elapsed / self.files * (self.total - self.files) if self.files else 0.0
        width = 24
        filled = int(width * self.files / max(self.total, 1))
        bar = "#" * filled + "-" * (width - filled)
        return (
            f"{self.label} [{bar}] {self.files}/{self.total} {self.unit}, "
            f"{rate:,.0f} frames/s, elapsed {duration(elapsed)}, left {duration(left)}"
        )

    def update(self, frames: int) -> None:
        self.files += 1
        self.frames += frames
        if not self.enabled:
            return
        if self.tty:
            end = "\n" if self.files == self.total else ""
            self.stream.write("\r" + self.line() + end)
            self.stream.flush()
        elif self.files % self.every == 0 or self.files == self.total:
            self.stream.write(self.line() + "\n")
            self.stream.flush()
