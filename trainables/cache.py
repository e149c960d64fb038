"""Where every task keeps what it computes once and reuses (decoded frames, features,
demo data): one root, so one environment variable moves all of it."""

from __future__ import annotations

import os
from pathlib import Path


def default_cache_dir() -> Path:
    """$VLA_TUNE_CACHE, else $XDG_CACHE_HOME/vla-tune, else ~/.cache/vla-tune."""
    if os.environ.get("VLA_TUNE_CACHE"):
        return Path(os.environ["VLA_TUNE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "vla-tune"
