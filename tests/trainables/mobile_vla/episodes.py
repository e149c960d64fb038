"""Hand-built episode files in the real on-disk format, for exact-value tests."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np


def write_episode(
    path: Path,
    images: np.ndarray | None = None,
    actions: np.ndarray | None = None,
    instruction: str | None = None,
    events: list[str] | None = None,
) -> Path:
    """Write one episode like the collector does (gzip BGR frames, per-frame chunks)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        if images is not None:
            f.create_dataset(
                "images", data=images, compression="gzip", chunks=(1, *images.shape[1:])
            )
        if actions is not None:
            f.create_dataset("actions", data=actions)
        num_frames = len(images) if images is not None else len(actions)
        if events is None:
            events = ["episode_start"] + ["start_action"] * (num_frames - 1)
        f.create_dataset("action_event_types", data=np.array(events, dtype="S16"))
        if instruction is not None:
            f.create_dataset("language_instruction", data=np.array([instruction.encode()]))
        f.attrs["episode_name"] = path.stem
        f.attrs["num_frames"] = num_frames
        f.attrs["total_duration"] = 0.4 * num_frames
        f.attrs["action_chunk_size"] = 10
    return path


def solid_frames(colors_bgr: list[tuple[int, int, int]], height: int = 12, width: int = 16):
    """One uniformly coloured BGR frame per colour: resizing keeps the colour exactly."""
    frames = np.zeros((len(colors_bgr), height, width, 3), dtype=np.uint8)
    for t, color in enumerate(colors_bgr):
        frames[t] = color
    return frames
