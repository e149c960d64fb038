"""Where every task keeps what it computes once and reuses (decoded frames, features,
demo data): one root, so one environment variable moves all of it."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def default_cache_dir() -> Path:
    """$VLA_TUNE_CACHE, else $XDG_CACHE_HOME/vla-tune, else ~/.cache/vla-tune."""
    if os.environ.get("VLA_TUNE_CACHE"):
        return Path(os.environ["VLA_TUNE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "vla-tune"


def write_atomic(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """`write(file)` into a temporary file beside `path`, then rename it over `path`: a
    reader (another trial, the next sweep) sees the old file or the whole new one, never
    the part a killed run left."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
