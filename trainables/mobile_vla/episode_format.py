"""The Mobile VLA episode file, as the real collector writes it, read and checked.

One HDF5 file per episode, `episode_YYYYMMDD_HHMMSS_<scenario>.h5`:
`images` (T, H, W, 3) uint8 BGR, `actions` (T, 3) float [linear_x, linear_y, angular_z],
`action_event_types` (T,) strings, optional `language_instruction` (1,) bytes, and
file attributes (`episode_name`, `num_frames`, `total_duration`, `action_chunk_size`, ...).

Everything here opens files inside the calling process: h5py handles cannot be pickled.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
from PIL import Image

ACTION_NAMES = ("linear_x", "linear_y", "angular_z")
FILE_NAME = re.compile(r"^episode_(\d{8})_(\d{6})_(?P<scenario>.+)\.h5$")


class EpisodeError(ValueError):
    """A bad episode file; str() is `path: reason`, ready to print."""

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


@dataclass
class EpisodeInfo:
    """Everything about an episode except its pixels (cheap to read)."""

    path: str
    num_frames: int
    image_shape: tuple[int, int]  # (height, width) as stored
    actions: np.ndarray  # (T, 3) float32, raw units
    event_types: list[str]
    instruction: str | None  # the file's own, None when the file has none
    scenario: str
    attrs: dict = field(default_factory=dict)


def scenario_of(path: str | Path) -> str:
    """`episode_20251114_101500_1box_vert_left.h5` -> `1box_vert_left` (else the stem)."""
    name = Path(path).name
    match = FILE_NAME.match(name)
    return match.group("scenario") if match else Path(name).stem


def _text(value) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.ndarray):
        return _text(value.reshape(-1)[0]) if value.size else ""
    return str(value)


def inspect_episode(path: str | Path, min_frames: int = 1) -> EpisodeInfo:
    """Open, validate and read everything but the images; raise EpisodeError naming the flaw."""
    path = Path(path)
    if not h5py.is_hdf5(path):
        raise EpisodeError(path, "not an HDF5 file")
    try:
        with h5py.File(path, "r") as f:
            return _inspect_open_file(path, f, min_frames)
    except EpisodeError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise EpisodeError(path, f"unreadable HDF5 file ({exc})") from exc


def _inspect_open_file(path: Path, f: h5py.File, min_frames: int) -> EpisodeInfo:
    for key in ("images", "actions"):
        if key not in f:
            raise EpisodeError(path, f"missing dataset '{key}'")
        if not isinstance(f[key], h5py.Dataset):
            raise EpisodeError(path, f"'{key}' is a group, not a dataset")
    images, actions = f["images"], f["actions"]

    if images.ndim != 4 or images.shape[-1] != 3:
        raise EpisodeError(path, f"'images' must have shape (T, H, W, 3), got {images.shape}")
    if images.dtype != np.uint8:
        raise EpisodeError(path, f"'images' must be uint8, got {images.dtype}")
    if actions.ndim != 2 or actions.shape[-1] != 3:
        raise EpisodeError(path, f"'actions' must have shape (T, 3), got {actions.shape}")
    if actions.dtype.kind != "f":
        raise EpisodeError(path, f"'actions' must be floating point, got {actions.dtype}")

    num_frames = images.shape[0]
    if actions.shape[0] != num_frames:
        raise EpisodeError(
            path, f"length mismatch: {num_frames} images but {actions.shape[0]} actions"
        )
    event_types: list[str] = []
    if "action_event_types" in f:
        event_types = [_text(v) for v in f["action_event_types"][()]]
        if len(event_types) != num_frames:
            raise EpisodeError(
                path,
                f"length mismatch: {num_frames} images but {len(event_types)} action_event_types",
            )

    action_values = np.asarray(actions[()], dtype=np.float32)
    bad = ~np.isfinite(action_values)
    if bad.any():
        frame = int(np.argwhere(bad)[0][0])
        raise EpisodeError(path, f"non-finite action (NaN or inf) at frame {frame}")
    if num_frames < min_frames:
        raise EpisodeError(path, f"{num_frames} frames, fewer than one window of {min_frames}")

    instruction = None
    if "language_instruction" in f:
        instruction = _text(f["language_instruction"][()]).strip() or None

    return EpisodeInfo(
        path=str(path),
        num_frames=num_frames,
        image_shape=(images.shape[1], images.shape[2]),
        actions=action_values,
        event_types=event_types,
        instruction=instruction,
        scenario=scenario_of(path),
        attrs={k: _text(v) if not np.isscalar(v) else v for k, v in f.attrs.items()},
    )


def decode_images(path: str | Path, size: tuple[int, int]) -> np.ndarray:
    """All frames, BGR -> RGB, resized to `size` (height, width): (T, h, w, 3) uint8.

    Reads one frame at a time so a 720p episode never sits whole in memory as raw pixels.
    """
    height, width = size
    try:
        with h5py.File(path, "r") as f:
            images = f["images"]
            out = np.empty((images.shape[0], height, width, 3), dtype=np.uint8)
            for t in range(images.shape[0]):
                out[t] = resize_rgb(images[t][..., ::-1], size)
    except (OSError, KeyError, ValueError) as exc:
        raise EpisodeError(path, f"cannot decode images ({exc})") from exc
    return out


def resize_rgb(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Area-style downscale (Pillow's reducing resize) of one (H, W, 3) uint8 frame."""
    height, width = size
    if frame.shape[:2] == (height, width):
        return np.ascontiguousarray(frame)
    image = Image.fromarray(np.ascontiguousarray(frame))
    # reducing_gap makes Pillow shrink by an integer box filter first: fast and alias-free.
    return np.asarray(image.resize((width, height), Image.Resampling.BILINEAR, reducing_gap=2.0))
