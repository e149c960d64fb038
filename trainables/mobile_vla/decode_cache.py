"""Decoded, resized episode frames on disk, keyed by file content and target size.

Decoding 720p gzip frames is the slow part of the pipeline, so each file is decoded once;
a changed file has a new content hash and is decoded again. Entries are plain `.npy`
files written atomically, so concurrent writers and readers never see half an entry.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np

# Bump when the decoded representation changes (colour order, resize filter, ...).
CACHE_VERSION = 1


def default_cache_dir() -> Path:
    """$VLA_TUNE_CACHE, else $XDG_CACHE_HOME/vla-tune, else ~/.cache/vla-tune."""
    if os.environ.get("VLA_TUNE_CACHE"):
        return Path(os.environ["VLA_TUNE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "vla-tune"


def content_hash(path: str | Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _stamp(path: str | Path) -> str:
    """Identity of a file's current bytes as the filesystem sees them (make/rsync style)."""
    st = os.stat(path)
    return f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"


class DecodeCache:
    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else default_cache_dir() / "decoded"

    def entry(self, digest: str, size: tuple[int, int]) -> Path:
        height, width = size
        return self.root / digest[:2] / f"{digest}_{height}x{width}_v{CACHE_VERSION}.npy"

    def digest(self, path: str | Path) -> str:
        """Content hash of `path`, remembered per (inode, size, mtime) so an unchanged
        20 GB folder is not re-read at every sweep start; any write changes the stamp."""
        resolved = Path(path).resolve()
        memo = self.root / "hashes" / hashlib.sha1(str(resolved).encode()).hexdigest()
        stamp = _stamp(resolved)
        try:
            saved_stamp, digest = memo.read_text().split()
            if saved_stamp == stamp:
                return digest
        except (OSError, ValueError):
            pass
        digest = content_hash(resolved)
        if _stamp(resolved) == stamp:  # not rewritten while we read it
            _write_atomic(memo, f"{stamp} {digest}".encode())
        return digest

    def get(self, digest: str, size: tuple[int, int]) -> np.ndarray | None:
        path = self.entry(digest, size)
        try:
            return np.load(path)
        except FileNotFoundError:
            return None
        except (OSError, ValueError):  # a damaged entry is a miss, not a failure
            return None

    def put(self, digest: str, size: tuple[int, int], frames: np.ndarray) -> Path:
        path = self.entry(digest, size)
        _write_atomic(path, frames)
        return path


def _write_atomic(path: Path, payload: bytes | np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            if isinstance(payload, np.ndarray):
                np.save(f, payload)
            else:
                f.write(payload)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
