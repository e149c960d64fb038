"""Synthetic Mobile VLA episodes, written in the real collector's on-disk format.

    python -m trainables.mobile_vla.demo_data --out data/demo --episodes 64

The scenes, the expert's actions and the rendering are in demo_scene.py (and why they
are built so that the data can be learned); here they become collector files.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path

import h5py
import numpy as np

from trainables.cache import default_cache_dir
from trainables.cli import demo_data_parser, write_or_fail
from trainables.mobile_vla.demo_scene import (
    ACTION_CHUNK_SIZE,
    NUM_FRAMES,
    SCENARIOS,
    Camera,
    Episode,
    instruction_for,
    render_bgr,
    simulate,
)

DEFAULT_HEIGHT, DEFAULT_WIDTH = 72, 128  # 720x1280 scaled by 1/10, same 9:16 aspect
MIN_SIZE, MAX_SIZE = 16, 4096
FIRST_TIMESTAMP = datetime(2025, 11, 14, 10, 0, 0)
COLLECTOR = "vla-tune demo_data"
PROG = "python -m trainables.mobile_vla.demo_data"
DESCRIPTION = "Write synthetic, learnable Mobile VLA episodes in the collector's format."


def episode_file_name(stamp: datetime, scenario: str) -> str:
    return f"episode_{stamp:%Y%m%d_%H%M%S}_{scenario}.h5"


def write_episode(
    path: Path,
    episode: Episode,
    camera: Camera,
    stamp: datetime,
    rng: np.random.Generator,
    with_instruction: bool,
) -> None:
    """Write one file with the collector's datasets, chunking and attributes."""
    shape = (NUM_FRAMES, camera.height, camera.width, 3)
    background = camera.background(episode.look)
    with h5py.File(path, "w") as f:
        images = f.create_dataset(
            "images", shape=shape, dtype=np.uint8, chunks=(1, *shape[1:]), compression="gzip"
        )
        for t, (x, y) in enumerate(episode.positions):
            images[t] = render_bgr(camera, background, x, y, episode, rng)
        f.create_dataset("actions", data=episode.actions)
        f.create_dataset("action_event_types", data=np.array(episode.events, dtype="S"))
        if with_instruction:
            text = instruction_for(episode.scenario).encode("utf-8")
            f.create_dataset("language_instruction", data=np.array([text], dtype="S"))
        f.attrs.update(
            {
                "episode_name": path.stem,
                "num_frames": NUM_FRAMES,
                "total_duration": round(float(episode.durations[1:].sum()), 3),
                "action_chunk_size": ACTION_CHUNK_SIZE,
                "scenario": episode.scenario,
                "collector": COLLECTOR,
                "camera": "bgr8",
                "created": stamp.isoformat(),
                "initial_box_distance": round(episode.layout.box_front, 3),
            }
        )


def scenario_order(episodes: int, seed: int) -> list[str]:
    """Every scenario equally often: each block of len(SCENARIOS) is a fresh shuffle."""
    order: list[str] = []
    for block in range(-(-episodes // len(SCENARIOS))):
        rng = np.random.default_rng([seed, block, 1])
        order.extend(SCENARIOS[i] for i in rng.permutation(len(SCENARIOS)))
    return order[:episodes]


def check_arguments(episodes: int, height: int, width: int, seed: int) -> None:
    if episodes < 1:
        raise ValueError(f"--episodes must be at least 1, got {episodes}")
    for name, value in (("height", height), ("width", width)):
        if not MIN_SIZE <= value <= MAX_SIZE:
            raise ValueError(f"--{name} must be in [{MIN_SIZE}, {MAX_SIZE}], got {value}")
    if seed < 0:
        raise ValueError(f"--seed must be >= 0, got {seed}")


def write_demo_episodes(
    out_dir: str | Path,
    episodes: int,
    height: int = DEFAULT_HEIGHT,
    width: int = DEFAULT_WIDTH,
    seed: int = 0,
    with_instruction: bool = True,
) -> list[Path]:
    """Write `episodes` files into `out_dir` (created if needed); same seed, same files.

    Episode i depends only on (seed, i), so a larger run extends a smaller one.
    Existing files of the same name are overwritten.
    """
    check_arguments(episodes, height, width, seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    camera = Camera(height, width)
    stamp = FIRST_TIMESTAMP
    paths = []
    for index, scenario in enumerate(scenario_order(episodes, seed)):
        rng = np.random.default_rng([seed, index, 0])
        episode = simulate(scenario, rng)
        path = out / episode_file_name(stamp, scenario)
        write_episode(path, episode, camera, stamp, rng, with_instruction)
        paths.append(path)
        # The next episode starts after this one plus a reset pause; names stay distinct.
        pause = float(rng.uniform(15, 60))
        stamp += timedelta(seconds=int(np.ceil(episode.durations.sum() + pause)))
    return paths


DEMO_EPISODES = 64  # ~630 training windows: batch 512 still fits (one step per epoch)


def ensure_demo_episodes(
    episodes: int = DEMO_EPISODES, root: str | Path | None = None, seed: int = 0
) -> tuple[Path, bool]:
    """The demo episode folder under the cache, generated once; (folder, was_created).

    Generated into a temporary folder and renamed into place, so an interrupted run
    never leaves a half-written demo set that later runs would trust.
    """
    base = Path(root) if root is not None else default_cache_dir() / "demo_episodes"
    folder = base / f"seed{seed}_n{episodes}_{DEFAULT_HEIGHT}x{DEFAULT_WIDTH}"
    if folder.is_dir():
        return folder, False
    base.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=base, prefix=".partial-") as tmp:
        write_demo_episodes(tmp, episodes, seed=seed)
        try:
            os.rename(tmp, folder)
        except OSError:  # another process finished first
            if not folder.is_dir():
                raise
        else:
            os.mkdir(tmp)  # TemporaryDirectory wants something to remove
    return folder, True


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = demo_data_parser(PROG, DESCRIPTION, out_help="directory to write episode_*.h5 into")
    parser.add_argument("--episodes", type=int, required=True, help="number of episodes")
    parser.add_argument("--height", type=int, default=DEFAULT_HEIGHT, help="image height")
    parser.add_argument("--width", type=int, default=DEFAULT_WIDTH, help="image width")
    parser.add_argument(
        "--without-instruction",
        action="store_true",
        help="omit language_instruction, like older collector files",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)

    def write() -> str:
        paths = write_demo_episodes(
            args.out,
            args.episodes,
            height=args.height,
            width=args.width,
            seed=args.seed,
            with_instruction=not args.without_instruction,
        )
        return f"wrote {len(paths)} episodes ({args.height}x{args.width}) to {Path(args.out)}"

    return write_or_fail(PROG, write)


if __name__ == "__main__":
    sys.exit(main())
