"""Decoded, resized episode frames on disk, keyed by file content and target size.

Decoding 720p gzip frames is the slow part of the pipeline, so each file is decoded once;
a changed file has a new content hash and is decoded again. Entries are plain `.npy`
files written atomically, so concurrent writers and readers never see half an entry.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

import numpy as np

from trainables.cache import default_cache_dir, write_atomic

# Bump when the decoded representation changes (colour order, resize filter, ...).
CACHE_VERSION = 1


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
            write_atomic(memo, lambda f: f.write(f"{stamp} {digest}".encode()))
        return digest

    def get(
        self, digest: str, size: tuple[int, int], num_frames: int | None = None
    ) -> np.ndarray | None:
        """The cached frames, or None on a miss. A truncated entry, or one that is not
        (num_frames, height, width, 3) uint8, is a miss with a warning naming it: the
        episode is decoded again and the entry rewritten, never a traceback later on."""
        path = self.entry(digest, size)
        try:
            frames = np.load(path)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, EOFError) as exc:
            return _damaged(path, f"unreadable ({exc})")
        problem = entry_problem(frames, size, num_frames)
        return _damaged(path, problem) if problem else frames

    def put(self, digest: str, size: tuple[int, int], frames: np.ndarray) -> Path:
        path = self.entry(digest, size)
        write_atomic(path, lambda f: np.save(f, frames))
        return path


def entry_problem(frames: np.ndarray, size: tuple[int, int], num_frames: int | None) -> str:
    """What is wrong with a loaded entry ("" when nothing): decoded frames are always
    (T, height, width, 3) uint8."""
    if frames.dtype != np.uint8:
        return f"dtype {frames.dtype}, expected uint8"
    count_ok = num_frames is None or (frames.ndim > 0 and frames.shape[0] == num_frames)
    if frames.ndim != 4 or frames.shape[1:] != (*size, 3) or not count_ok:
        count = "T" if num_frames is None else num_frames
        return f"shape {frames.shape}, expected ({count}, {size[0]}, {size[1]}, 3)"
    return ""


def _damaged(path: Path, problem: str) -> None:
    warnings.warn(f"decode cache entry {path}: {problem}; decoding again", stacklevel=3)
    return None
