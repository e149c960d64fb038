"""A folder of Mobile VLA episodes -> validated, decoded, windowed numpy arrays.

`load_dataset` does everything a trial needs before training, in an order that fails
fast: list files, check every file (cheap: no pixels), stop with every bad file named,
then decode what the cache does not hold yet (with progress), then build windows.
The result holds only numpy arrays and strings, so Ray can put it in the object store
once and every trial maps the same memory.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from trainables.mobile_vla.decode_cache import DecodeCache
from trainables.mobile_vla.episode_format import (
    ACTION_NAMES,
    EpisodeError,
    EpisodeInfo,
    decode_images,
    inspect_episode,
)
from trainables.mobile_vla.windows import Windows, make_windows, normalize_actions, split_episodes
from trainables.progress import Progress

# Decode in a process pool only when there is enough work to pay for starting it.
POOL_MIN_FILES = 4
POOL_MIN_BYTES = 64 * 2**20


@dataclass
class DataConfig:
    data_dir: str
    pattern: str = "episode_*.h5"
    window_size: int = 8
    fwd_pred_next_n: int = 10
    action_bound: float = 1.15
    action_dims: tuple[str, ...] = ("linear_x", "linear_y")
    image_size: tuple[int, int] = (224, 224)  # (height, width) the model takes
    val_ratio: float = 0.1
    split_seed: int = 0
    default_instruction: str | None = None  # for files without language_instruction
    instruction_map: dict[str, str] = field(default_factory=dict)  # scenario words -> text
    cache_dir: str | None = None  # None: $VLA_TUNE_CACHE or ~/.cache/vla-tune
    skip_bad: bool = False
    workers: int = 0  # decode processes; 0 = automatic, 1 = in this process

    def __post_init__(self) -> None:
        self.image_size = tuple(self.image_size)
        self.action_dims = tuple(self.action_dims)
        unknown = [d for d in self.action_dims if d not in ACTION_NAMES]
        if unknown or not self.action_dims:
            raise ValueError(f"action_dims: {unknown or '[]'} not among {list(ACTION_NAMES)}")
        if self.window_size < 1 or self.fwd_pred_next_n < 1:
            raise ValueError("window_size and fwd_pred_next_n must be >= 1")
        if not self.action_bound > 0:
            raise ValueError(f"action_bound must be > 0, got {self.action_bound}")
        if not 0 <= self.val_ratio < 1:
            raise ValueError(f"val_ratio must be in [0, 1), got {self.val_ratio}")


class DataError(ValueError):
    """The data cannot be used; carries every bad file so all are reported at once."""

    def __init__(self, message: str, errors: list[EpisodeError] | None = None):
        self.errors = errors or []
        if len(self.errors) == 1:  # one bad file: its own line says it all
            super().__init__(str(self.errors[0]))
            return
        lines = [message] + [f"  {e}" for e in self.errors]
        super().__init__("\n".join(lines))


@dataclass
class MobileVLAData:
    """All frames of all episodes, with train and validation windows indexing into them."""

    images: np.ndarray  # (F, H, W, 3) uint8 RGB at the model's size
    actions: np.ndarray  # (F, A) float32 in [-1, 1]
    episode_offsets: np.ndarray  # (E + 1,) int64: episode e is frames [o[e], o[e + 1])
    episode_names: list[str]
    instructions: list[str]  # one per episode
    train: Windows
    val: Windows
    action_names: tuple[str, ...]
    action_bound: float
    skipped: list[str] = field(default_factory=list)  # "path: reason" of skipped files
    # Frozen image tokens of every frame (image_features.ImageFeatures), when precomputed.
    image_features: Any = None

    @property
    def num_episodes(self) -> int:
        return len(self.episode_names)


def list_episodes(data_dir: str | Path, pattern: str) -> list[Path]:
    root = Path(data_dir)
    if not root.is_dir():
        raise DataError(f"{root}: data directory does not exist")
    paths = sorted(p for p in root.glob(pattern) if p.is_file())
    if not paths:
        raise DataError(f"{root}: no episode files match '{pattern}'")
    return paths


def resolve_instruction(info: EpisodeInfo, cfg: DataConfig) -> str:
    """The file's own instruction, else the most specific instruction_map entry whose
    words all appear in the scenario words of the file name, else the default."""
    if info.instruction:
        return info.instruction
    words = set(info.scenario.replace("-", "_").split("_"))
    best, best_len = None, 0
    for key, text in cfg.instruction_map.items():
        key_words = set(key.replace("-", "_").split("_"))
        if key_words <= words and len(key_words) > best_len:
            best, best_len = text, len(key_words)
    if best is not None:
        return best
    if cfg.default_instruction:
        return cfg.default_instruction
    raise EpisodeError(
        info.path,
        f"no language_instruction, and no instruction configured for scenario "
        f"'{info.scenario}' (set default_instruction or instruction_map)",
    )


def inspect_all(paths: list[Path], cfg: DataConfig) -> tuple[list[EpisodeInfo], list, list]:
    """(good infos, their instructions, errors) for every file."""
    infos, instructions, errors = [], [], []
    for path in paths:
        try:
            info = inspect_episode(path, min_frames=cfg.window_size)
            instructions.append(resolve_instruction(info, cfg))
            infos.append(info)
        except EpisodeError as exc:
            errors.append(exc)
    return infos, instructions, errors


def load_frames(
    path: str, size: tuple[int, int], cache_root: str, num_frames: int | None = None
) -> tuple[np.ndarray, bool]:
    """Decoded frames of one file from the cache, decoding and storing them on a miss.

    Returns (frames, was_cached). Runs in a worker process, so takes only plain values.
    """
    cache = DecodeCache(cache_root)
    digest = cache.digest(path)
    frames = cache.get(digest, size, num_frames)
    if frames is not None:
        return frames, True
    frames = decode_images(path, size)
    cache.put(digest, size, frames)
    return frames, False


def _decode_workers(cfg: DataConfig, paths: list[str]) -> int:
    if cfg.workers:
        return cfg.workers
    total = sum(os.path.getsize(p) for p in paths)
    if len(paths) < POOL_MIN_FILES or total < POOL_MIN_BYTES:
        return 1
    return max(1, min(os.cpu_count() or 1, 8, len(paths)))


def decode_all(
    infos: list[EpisodeInfo],
    cfg: DataConfig,
    progress: bool = True,
    stream: TextIO | None = None,
) -> tuple[list[np.ndarray | None], list[EpisodeError], int]:
    """Frames for every episode (None where decoding failed), the errors, and cache hits."""
    cache_root = str(DecodeCache(cfg.cache_dir).root)
    paths = [info.path for info in infos]
    counts = [info.num_frames for info in infos]
    bar = Progress("decoding episodes", len(paths), stream=stream, enabled=progress)
    results: list[np.ndarray | None] = [None] * len(paths)
    errors: list[EpisodeError] = []
    hits = 0
    workers = _decode_workers(cfg, paths)

    def collect(i: int, outcome) -> None:
        nonlocal hits
        frames, cached = outcome
        results[i] = frames
        hits += cached
        bar.update(len(frames))

    def run(i: int, outcome: Callable[[], tuple[np.ndarray, bool]]) -> None:
        try:
            collect(i, outcome())
        except EpisodeError as exc:
            errors.append(exc)
            bar.update(0)

    todo = list(range(len(paths)))
    if workers > 1:
        try:
            # spawn, not fork: the caller may already hold torch/Ray threads.
            with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
                futures = {
                    i: pool.submit(load_frames, paths[i], cfg.image_size, cache_root, counts[i])
                    for i in todo
                }
                for i, future in futures.items():
                    run(i, future.result)
                    todo.remove(i)
        except BrokenProcessPool:
            # e.g. a __main__ that spawn cannot re-import (python -, notebooks): go serial.
            pass
    for i in todo:
        run(i, lambda i=i: load_frames(paths[i], cfg.image_size, cache_root, counts[i]))
    return results, errors, hits


def load_dataset(
    cfg: DataConfig, progress: bool = True, stream: TextIO | None = None
) -> MobileVLAData:
    paths = list_episodes(cfg.data_dir, cfg.pattern)
    infos, instructions, errors = inspect_all(paths, cfg)
    if errors and not cfg.skip_bad:
        raise DataError(f"{len(errors)} of {len(paths)} episode files are bad:", errors)

    frames, decode_errors, _ = decode_all(infos, cfg, progress=progress, stream=stream)
    if decode_errors and not cfg.skip_bad:
        raise DataError(f"{len(decode_errors)} episode files could not be decoded:", decode_errors)
    errors += decode_errors
    kept = [i for i, f in enumerate(frames) if f is not None]
    if not kept:
        raise DataError(f"{cfg.data_dir}: no usable episode files", errors)

    dims = [ACTION_NAMES.index(d) for d in cfg.action_dims]
    lengths = [infos[i].num_frames for i in kept]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    height, width = cfg.image_size
    images = np.empty((int(offsets[-1]), height, width, 3), dtype=np.uint8)
    for e, i in enumerate(kept):
        images[offsets[e] : offsets[e + 1]] = frames[i]
        frames[i] = None  # free as we go: a big folder should not sit in memory twice
    actions = np.concatenate(
        [normalize_actions(infos[i].actions, dims, cfg.action_bound) for i in kept]
    )

    names = [Path(infos[i].path).name for i in kept]
    train_ids, val_ids = split_episodes(names, cfg.val_ratio, cfg.split_seed)

    def build(ids: list[int]) -> Windows:
        return make_windows(ids, offsets, actions, cfg.window_size, cfg.fwd_pred_next_n)

    return MobileVLAData(
        images=images,
        actions=actions,
        episode_offsets=offsets,
        episode_names=names,
        instructions=[instructions[i] for i in kept],
        train=build(train_ids),
        val=build(val_ids),
        action_names=cfg.action_dims,
        action_bound=cfg.action_bound,
        skipped=[str(e) for e in errors],
    )
