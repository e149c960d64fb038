"""Windows per second: first (decoding) pass, cached pass, naive per-sample HDF5 reads.

    python bench/data_pipeline.py [--episodes 8] [--height 720 --width 1280] [--size 224]

Writes real-format 720x1280 gzip episodes to a temporary folder, then times three ways
of producing every training window as a (window, size, size, 3) uint8 array:
  first pass  - load_dataset with an empty cache (hash, check, decode, resize, store)
  cached pass - load_dataset again (cache hit) and gather every window from memory
  naive       - per window: open the HDF5 file, read its frames, BGR->RGB, resize
All three run in one process on the same files, so the ratios hold on a noisy machine.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from trainables.mobile_vla.dataset import DataConfig, load_dataset
from trainables.mobile_vla.demo_data import write_demo_episodes
from trainables.mobile_vla.episode_format import resize_rgb


def naive_windows(data_dir: Path, window: int, size: tuple[int, int]) -> int:
    """What a Dataset.__getitem__ that reads HDF5 per sample does; returns windows made."""
    count = 0
    for path in sorted(data_dir.glob("episode_*.h5")):
        with h5py.File(path, "r") as f:
            num_frames = f["images"].shape[0]
        for start in range(num_frames - window + 1):
            with h5py.File(path, "r") as f:
                frames = f["images"][start : start + window]
            sample = np.stack([resize_rgb(frame[..., ::-1], size) for frame in frames])
            assert sample.shape == (window, *size, 3)
            count += 1
    return count


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--episodes", type=int, default=8)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--size", type=int, default=224, help="model image size")
    parser.add_argument("--window", type=int, default=8)
    parser.add_argument("--workers", type=int, default=0, help="decode processes (0 = auto)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "episodes"
        write_demo_episodes(data_dir, args.episodes, height=args.height, width=args.width)
        size = (args.size, args.size)
        cfg = DataConfig(
            data_dir=str(data_dir),
            image_size=size,
            window_size=args.window,
            val_ratio=0.0,
            cache_dir=str(Path(tmp) / "cache"),
            workers=args.workers,
        )
        megabytes = sum(p.stat().st_size for p in data_dir.glob("*.h5")) / 2**20
        print(
            f"{args.episodes} episodes of {args.height}x{args.width} "
            f"({megabytes:.1f} MB gzip) -> {args.size}x{args.size}, window {args.window}"
        )

        data, first_s = timed(lambda: load_dataset(cfg, progress=False))
        windows = len(data.train)

        def cached_pass() -> int:
            again = load_dataset(cfg, progress=False)
            for frames in again.train.frames:
                sample = again.images[frames]
            assert sample.shape == (args.window, *size, 3)
            return len(again.train)

        cached_count, cached_s = timed(cached_pass)
        naive_count, naive_s = timed(lambda: naive_windows(data_dir, args.window, size))
        assert cached_count == naive_count == windows

    rates = {"first pass": windows / first_s, "cached": windows / cached_s}
    rates["naive"] = windows / naive_s
    for name, rate in rates.items():
        print(f"{name:>11}: {rate:10.1f} windows/s")
    print(f"cached / naive     = {rates['cached'] / rates['naive']:.1f}x")
    print(f"first pass / naive = {rates['first pass'] / rates['naive']:.1f}x")


if __name__ == "__main__":
    main()
