"""Training samples: windows of consecutive frames with per-frame action chunks.

A window is `window_size` consecutive frames of one episode. For each frame i of the
window its target is the chunk of the next `fwd_pred_next_n` actions starting at frame i;
chunk entries past the episode's end are zero-padded and masked out.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np


@dataclass
class Windows:
    """One split's windows as plain arrays (picklable, shareable zero-copy)."""

    frames: np.ndarray  # (N, window) int64: indices into the dataset's frame arrays
    episode: np.ndarray  # (N,) int64: episode index of each window
    chunks: np.ndarray  # (N, window, fwd, A) float32: normalized actions, 0 where masked
    mask: np.ndarray  # (N, window, fwd) bool: True where the chunk entry is real

    def __len__(self) -> int:
        return len(self.frames)


# A value within half the action bound of zero counts as "no motion": direction_acc in
# training and the direction classes of offline evaluation both read it.
DIRECTION_DEADBAND = 0.5


def direction_signs(values: np.ndarray, bound: float = 1.0) -> np.ndarray:
    """Per element: -1, 0 (within the deadband) or +1; `bound` 1 for normalized actions."""
    return np.where(np.abs(values) < DIRECTION_DEADBAND * bound, 0, np.sign(values)).astype(
        np.int64
    )


def normalize_actions(actions: np.ndarray, dims: list[int], bound: float) -> np.ndarray:
    """Pick the action dims, clip to +-bound and scale to [-1, 1]."""
    picked = np.asarray(actions, dtype=np.float32)[:, dims]
    return np.clip(picked, -bound, bound) / np.float32(bound)


def episode_windows(
    first_frame: int, num_frames: int, window_size: int, fwd_pred_next_n: int
) -> tuple[np.ndarray, np.ndarray]:
    """Frame indices (N, window) and chunk indices (N, window, fwd) of one episode.

    Chunk indices are local to the episode; those >= num_frames are past its end.
    """
    starts = np.arange(num_frames - window_size + 1)
    local = starts[:, None] + np.arange(window_size)[None, :]
    chunk = local[:, :, None] + np.arange(fwd_pred_next_n)[None, None, :]
    return first_frame + local, chunk


def make_windows(
    episode_ids: list[int],
    offsets: np.ndarray,
    actions: np.ndarray,
    window_size: int,
    fwd_pred_next_n: int,
) -> Windows:
    """All windows of the given episodes. `actions` are the dataset's normalized (F, A)."""
    frames, episodes, chunks, masks = [], [], [], []
    action_dim = actions.shape[1]
    for e in episode_ids:
        start, stop = int(offsets[e]), int(offsets[e + 1])
        num_frames = stop - start
        local_frames, chunk_idx = episode_windows(start, num_frames, window_size, fwd_pred_next_n)
        mask = chunk_idx < num_frames
        values = actions[start:stop][np.minimum(chunk_idx, num_frames - 1)]
        values[~mask] = 0.0
        frames.append(local_frames)
        episodes.append(np.full(len(local_frames), e, dtype=np.int64))
        chunks.append(values.astype(np.float32))
        masks.append(mask)
    if not frames:
        return Windows(
            frames=np.zeros((0, window_size), np.int64),
            episode=np.zeros((0,), np.int64),
            chunks=np.zeros((0, window_size, fwd_pred_next_n, action_dim), np.float32),
            mask=np.zeros((0, window_size, fwd_pred_next_n), bool),
        )
    return Windows(
        frames=np.concatenate(frames).astype(np.int64),
        episode=np.concatenate(episodes),
        chunks=np.concatenate(chunks),
        mask=np.concatenate(masks),
    )


def split_episodes(names: list[str], val_ratio: float, seed: int = 0) -> tuple[list, list]:
    """Deterministic train/validation split by episode (never by window).

    Episodes are ordered by a hash of (seed, file name), so the split depends only on the
    names, not on listing order, and adding a file moves few others. At least one
    validation episode when there are two or more episodes and val_ratio > 0.
    """
    order = sorted(
        range(len(names)),
        key=lambda i: hashlib.sha256(f"{seed}:{names[i]}".encode()).hexdigest(),
    )
    n_val = round(val_ratio * len(names))
    if val_ratio > 0 and len(names) >= 2:
        n_val = min(max(n_val, 1), len(names) - 1)
    val = sorted(order[:n_val])
    train = sorted(order[n_val:])
    return train, val
