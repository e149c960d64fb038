"""Check a folder of Mobile VLA episodes before training on it.

    python -m trainables.mobile_vla.check_data DIR [--pattern GLOB] [--decode]

Prints a summary (episodes, frames, windows, action statistics, instructions seen) and
every bad file as `path: reason`. Exit 0 when every file is good, 2 otherwise.
Without --decode it reads no pixels (seconds for a big folder); --decode also decodes
every frame through the cache, which catches corrupt image chunks and warms the cache.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter

import numpy as np

from trainables.mobile_vla.dataset import DataConfig, DataError, decode_all, list_episodes
from trainables.mobile_vla.episode_format import ACTION_NAMES, EpisodeError, inspect_episode


def parse_size(text: str) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW such as 224x224, got '{text}'") from None
    if height < 1 or width < 1:
        raise argparse.ArgumentTypeError(f"sizes must be positive, got '{text}'")
    return height, width


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m trainables.mobile_vla.check_data", description=__doc__.split("\n")[0]
    )
    parser.add_argument("data_dir", help="folder of episode_*.h5 files")
    parser.add_argument("--pattern", default="episode_*.h5", help="glob inside DIR")
    parser.add_argument("--window-size", type=int, default=8, help="frames per window")
    parser.add_argument("--decode", action="store_true", help="also decode every frame")
    parser.add_argument("--image-size", type=parse_size, default=(224, 224), help="HxW")
    parser.add_argument("--cache-dir", default=None, help="decode cache (with --decode)")
    return parser


def action_summary(actions: np.ndarray) -> list[str]:
    lines = []
    for d, name in enumerate(ACTION_NAMES):
        col = actions[:, d]
        lines.append(
            f"  {name:<10} min {col.min():+.3f}  max {col.max():+.3f}  mean {col.mean():+.3f}  "
            f"neg {np.mean(col < 0):5.1%}  zero {np.mean(col == 0):5.1%}  "
            f"pos {np.mean(col > 0):5.1%}"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        paths = list_episodes(args.data_dir, args.pattern)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    infos, bad = [], []
    for path in paths:
        try:
            infos.append(inspect_episode(path, min_frames=args.window_size))
        except EpisodeError as exc:
            bad.append(exc)

    if args.decode and infos:
        cfg = DataConfig(
            data_dir=args.data_dir, image_size=args.image_size, cache_dir=args.cache_dir
        )
        frames, decode_errors, hits = decode_all(infos, cfg)
        failed = {e.path for e in decode_errors}
        infos = [info for info in infos if info.path not in failed]
        bad += decode_errors
        print(f"decoded {len(infos)} episodes ({hits} from cache)")

    frames = sum(info.num_frames for info in infos)
    windows = sum(info.num_frames - args.window_size + 1 for info in infos)
    print(f"{args.data_dir}: {len(paths)} files, {len(infos)} good, {len(bad)} bad")
    if infos:
        sizes = Counter(f"{info.image_shape[0]}x{info.image_shape[1]}" for info in infos)
        lengths = [info.num_frames for info in infos]
        print(
            f"frames: {frames} (per episode {min(lengths)}-{max(lengths)}), "
            f"windows of {args.window_size}: {windows}, image sizes: {dict(sizes)}"
        )
        print("actions (raw units):")
        print("\n".join(action_summary(np.concatenate([info.actions for info in infos]))))
        seen = Counter(info.instruction or "(none in file)" for info in infos)
        print("instructions:")
        for text, count in seen.most_common():
            print(f"  {count:5d}  {text}")
    for exc in bad:
        print(f"bad: {exc}", file=sys.stderr)
    return 2 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
