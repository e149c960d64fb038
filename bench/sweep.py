"""The default grid with ASHA, without the feature cache, and at full budget (FIFO), in one go.

    python bench/sweep.py [--space grid_robovlms] [-- extra tuner.run arguments]

Runs `python -m tuner.run` three times in a temporary folder (same data, same machine, one
after the other): the default sweep (ASHA, frozen image features computed once), the same
with `--set feature_cache=false` (every trial runs the vision tower per step), and the
full grid (FIFO), each without the confirmation phase (`--confirm 0`). Prints:
  - wall time of each sweep, and default / no-cache;
  - trial-epochs ASHA used, as a share of the full grid's;
  - whether ASHA's best configuration is the full grid's best (by the space's metric and
    mode: lowest val_loss, highest exact_match), and the metric gap;
  - slot utilization: training seconds / (wall x parallel slots);
  - peak memory of the whole sweep: driver, Ray and workers together (summed RSS of the
    process tree, sampled every 0.2 s).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil

from tuner.spaces import load_space


def tree_rss(root: psutil.Process) -> int:
    total = 0
    for proc in [root, *root.children(recursive=True)]:
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total


def run_sweep(name: str, args: list[str], workdir: Path) -> dict:
    """Run one sweep; return wall seconds and peak tree memory."""
    command = [sys.executable, "-m", "tuner.run", "--name", name, *args]
    started = time.monotonic()
    proc = subprocess.Popen(command, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        root = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                peak = max(peak, tree_rss(root))
            except psutil.NoSuchProcess:
                return
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output = proc.communicate()[0].decode(errors="replace")
    done.set()
    sampler.join()
    wall = time.monotonic() - started
    if proc.returncode != 0:
        print(output[-4000:])
        raise SystemExit(f"sweep {name} failed with exit {proc.returncode}")
    return {"wall": wall, "peak_rss": peak}


def trial_progress(experiment: Path) -> Iterator[tuple[Path, list[dict[str, str]]]]:
    """Each trial folder of a sweep with its progress.csv rows (one per reported epoch);
    trials that reported nothing are left out."""
    for progress in experiment.glob("*/progress.csv"):
        with progress.open() as f:
            rows = list(csv.DictReader(f))
        if rows:
            yield progress.parent, rows


def read_trials(experiment: Path, metric: str) -> list[dict]:
    """Per trial: config, epochs run, training seconds, last metric value."""
    trials = []
    for folder, rows in trial_progress(experiment):
        params = json.loads((folder / "params.json").read_text())
        trials.append(
            {
                "config": params,
                "epochs": len(rows),
                "train_seconds": sum(float(r["train_seconds"]) for r in rows),
                "value": float(rows[-1][metric]),
            }
        )
    return trials


def best(trials: list[dict], mode: str) -> dict:
    """The best trial by the space's mode: lowest value for min, highest for max."""
    pick = min if mode == "min" else max
    return pick(trials, key=lambda t: t["value"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--space", default="grid_robovlms")
    parser.add_argument("--metric", help="default: the space's metric (its mode decides best)")
    parser.add_argument("--slots", type=int, default=os.cpu_count() or 1,
                        help="parallel trial slots (CPUs / CPUs per trial)")  # fmt: skip
    parser.add_argument("extra", nargs="*", help="more tuner.run arguments (after --)")
    args = parser.parse_args()
    space = load_space(args.space)
    metric = args.metric or space.metric

    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        workdir = Path(tmp)
        # The search alone: the confirmation phase (issue 12) is the same work in each.
        results = str(workdir / "results")
        common = ["--space", args.space, "--storage-path", results, "--confirm", "0", *args.extra]
        asha = [*common, "--scheduler", "asha"]
        runs = {
            "asha": run_sweep("asha", asha, workdir),
            "nocache": run_sweep("nocache", [*asha, "--set", "feature_cache=false"], workdir),
            "fifo": run_sweep("fifo", [*common, "--scheduler", "fifo"], workdir),
        }
        trials = {k: read_trials(workdir / "results" / k, metric) for k in runs}

    searched = sorted(
        k for k in trials["fifo"][0]["config"]
        if len({json.dumps(t["config"][k]) for t in trials["fifo"]}) > 1
    )  # fmt: skip

    def key(trial: dict) -> str:
        return ", ".join(f"{k}={trial['config'][k]}" for k in searched)

    print(f"{'':>6} {'wall s':>8} {'trials':>7} {'epochs':>7} {'slot use':>9} {'peak MB':>8}")
    for name, run in runs.items():
        rows = trials[name]
        epochs = sum(t["epochs"] for t in rows)
        busy = sum(t["train_seconds"] for t in rows) / (run["wall"] * args.slots)
        print(
            f"{name:>6} {run['wall']:8.1f} {len(rows):7d} {epochs:7d} {busy:9.1%} "
            f"{run['peak_rss'] / 2**20:8.0f}"
        )
    asha_epochs = sum(t["epochs"] for t in trials["asha"])
    fifo_epochs = sum(t["epochs"] for t in trials["fifo"])
    asha_best, fifo_best = best(trials["asha"], space.mode), best(trials["fifo"], space.mode)
    print(
        f"ASHA trial-epochs / full grid: {asha_epochs}/{fifo_epochs} "
        f"= {asha_epochs / fifo_epochs:.2f}"
    )
    print(f"wall time ASHA / full grid:    {runs['asha']['wall'] / runs['fifo']['wall']:.2f}")
    print(
        f"wall time with / without the feature cache: "
        f"{runs['asha']['wall'] / runs['nocache']['wall']:.2f}"
    )
    print(f"ASHA best: {key(asha_best)}  {metric} {asha_best['value']:.4f}")
    print(f"grid best: {key(fifo_best)}  {metric} {fifo_best['value']:.4f}")
    same = key(asha_best) == key(fifo_best)
    gap = asha_best["value"] - fifo_best["value"]
    print(f"same best configuration: {'yes' if same else 'no'}; {metric} gap {gap:+.4f}")


if __name__ == "__main__":
    main()
