"""Where every task keeps what it computes once and reuses (decoded frames, features,
demo data, measurements): one root, so one environment variable moves all of it."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, Generic, TypeVar

T = TypeVar("T")


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


def measurements_dir() -> Path:
    """Where measurements are kept (calibrations, Tune's overhead, import times)."""
    return default_cache_dir() / "calibration"


class Records(Generic[T]):
    """Measurements kept as small JSON files in one folder, each named by a hash of its key,
    so the next sweep of the same set-up reads them instead of measuring again. A record
    is a dataclass (`kind`); one that is absent, unreadable or of another shape reads as
    None, and is measured again. A key is anything JSON-able."""

    def __init__(self, kind: Callable[..., T], root: str | Path | None = None, prefix: str = ""):
        self.kind, self.prefix = kind, prefix
        self.root = Path(root) if root is not None else measurements_dir()

    def path(self, key: Any) -> Path:
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
        return self.root / f"{self.prefix}{digest[:32]}.json"

    def get(self, key: Any) -> T | None:
        try:
            return self.kind(**json.loads(self.path(key).read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def put(self, key: Any, record: T) -> None:
        text = json.dumps(dataclasses.asdict(record), indent=2)
        write_atomic(self.path(key), lambda f: f.write(text.encode()))
