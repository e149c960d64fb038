"""Memory per trial in reused Ray workers: each trial's own peak, worker by worker.

    python bench/trial_memory.py [--layers 2] [--episodes 16] [-- extra tuner.run arguments]

Writes `--episodes` demo episodes (the collector's format and size, 720x1280) and a
Kosmos-2 with the real widths (vision 1024 at 224 px, text 2048) but `--layers` layers per
tower and random weights, then runs one sweep on them (`python -m tuner.run --space paper_robovlms
--scheduler fifo --confirm 0`, one CPU per trial; extra arguments after `--`). Ray reuses
each worker process for trial after trial (`reuse_actors=True`). From each trial's
results it reads `peak_mem_mb` (the trial's own peak: sampled resident size on CPU,
CUDA's allocator on a GPU) and `pid` (its worker). Prints each worker's trials in the
order they ran, the summed RSS peak of the whole sweep (driver, Ray and workers), and last

    later_over_first=<x>

the largest ratio, over workers, of a later trial's peak to the worker's first trial's
peak (the target: <= 1.10, memory per trial rather than per worker).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections import defaultdict
from pathlib import Path

import torch
from common import write_random_kosmos2
from sweep import run_sweep, trial_progress
from transformers import Kosmos2Config

from trainables.mobile_vla.dataset import DataConfig, inspect_all, list_episodes
from trainables.mobile_vla.demo_data import write_demo_episodes


def write_inputs(root: Path, episodes: int, layers: int) -> tuple[Path, Path]:
    """(episode folder, model folder) for the sweep."""
    data_dir = root / "episodes"
    write_demo_episodes(data_dir, episodes, height=720, width=1280)  # the collector's size
    paths = list_episodes(data_dir, "episode_*.h5")
    _, instructions, _ = inspect_all(paths, DataConfig(data_dir=str(data_dir)))
    model = root / "kosmos2-widths"
    config = Kosmos2Config(
        text_config={"layers": layers}, vision_config={"num_hidden_layers": layers}
    )
    write_random_kosmos2(model, instructions, config, torch.device("cpu"))
    return data_dir, model


def trial_peaks(experiment: Path) -> dict[str, list[tuple[str, float]]]:
    """Per worker pid, its trials' (name, own peak MB) in the order they started."""
    started = []
    for _, rows in trial_progress(experiment):
        first = rows[0]
        start = float(first["timestamp"]) - float(first["time_this_iter_s"])
        peak = max(float(r["peak_mem_mb"]) for r in rows)
        started.append((start, first["pid"], first["trial_id"], peak))
    workers: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for _, pid, name, peak in sorted(started):
        workers[pid].append((name, peak))
    return workers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers", type=int, default=2, help="layers per tower")
    parser.add_argument("--episodes", type=int, default=16, help="demo episodes (18 frames)")
    parser.add_argument("extra", nargs="*", help="more tuner.run arguments (after --)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-trial-memory-") as tmp:
        root = Path(tmp)
        os.environ["VLA_TUNE_CACHE"] = str(root / "cache")  # the sweep's decode cache
        data_dir, model = write_inputs(root, args.episodes, args.layers)
        sweep = [
            "--space", "paper_robovlms", "--scheduler", "fifo", "--confirm", "0",
            "--cpus-per-trial", "1", "--data-dir", str(data_dir), "--model", str(model),
            "--storage-path", str(root / "results"), *args.extra,
        ]  # fmt: skip
        run = run_sweep("memory", sweep, root)
        workers = trial_peaks(root / "results" / "memory")

    ratios = []
    print(f"{'worker':>8} {'trials':>6}  own peak MB of each trial, in order (trial id)")
    for pid, trials in workers.items():
        peaks = "  ".join(f"{peak:7.0f} ({name})" for name, peak in trials)
        print(f"{pid:>8} {len(trials):6d}  {peaks}")
        first = trials[0][1]
        ratios += [peak / first for _, peak in trials[1:]]
    if not ratios:
        raise SystemExit("no worker ran more than one trial: add trials or lower the slots")
    print(f"summed RSS peak of the sweep: {run['peak_rss'] / 2**20:.0f} MB")
    print(f"later_over_first={max(ratios):.3f}")


if __name__ == "__main__":
    main()
