"""Trials sharing one card: bench/gpu.py's `share_card` starts N of these processes at once.

    python bench/gpu_share.py --config cfg.json --ready R --start S --seconds T --out out.json

Each builds a real Mobile VLA trial from the flat config (its share of the card from
`gpu_share`, as a trial under `--gpus-per-trial 1/N` gets it; the probe then picks its
micro-batch within that share), marks itself ready, waits
until every process is (the start file appears), then trains the trial's own optimizer
steps for T seconds and writes what it did. Building (imports, model load, features)
is outside the timed part, so the processes train at the same time.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from itertools import count
from pathlib import Path

import torch

from trainables.mobile_vla.dataset import load_dataset
from trainables.mobile_vla.trainable import MobileVLATrial
from trainables.mobile_vla.trial_config import parse_config
from trainables.trial_loop import apply_run_options


def share_card(flat: dict, counts: tuple[int, ...], seconds: float, root: Path) -> dict:
    """N trial processes at once, each capped at 1/N of the card; summed samples/s."""
    results = {}
    for n in counts:
        folder = root / f"share{n}"
        folder.mkdir()
        start = folder / "start"
        procs = []
        for i in range(n):
            config = folder / f"config{i}.json"
            config.write_text(json.dumps({**flat, "gpu_share": 1.0 / n, "seed": i}))
            ready, out = folder / f"ready{i}", folder / f"out{i}.json"
            command = [sys.executable, str(Path(__file__).resolve()), "--config", str(config),
                       "--ready", str(ready), "--start", str(start), "--seconds", str(seconds),
                       "--out", str(out)]  # fmt: skip
            procs.append(subprocess.Popen(command))
        deadline = time.time() + 300
        while not all((folder / f"ready{i}").exists() for i in range(n)):
            if any(p.poll() not in (None, 0) for p in procs) or time.time() > deadline:
                for p in procs:
                    p.kill()
                raise RuntimeError(f"{n} sharing processes: one failed or none got ready")
            time.sleep(0.05)
        start.touch()
        for p in procs:
            p.wait(timeout=seconds + 120)
        outs = [json.loads((folder / f"out{i}.json").read_text()) for i in range(n)]
        results[n] = {
            "summed_samples_per_s": sum(o["samples_per_s"] for o in outs),
            "each": [round(o["samples_per_s"], 2) for o in outs],
            "peak_mb_each": [round(o["peak_mb"]) for o in outs],
        }
        print(f"   {n} processes: {results[n]}", flush=True)
    return results


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="JSON file: the trial's flat config")
    p.add_argument("--ready", required=True, help="file to create once built")
    p.add_argument("--start", required=True, help="file whose appearance starts the clock")
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--out", required=True)
    return p.parse_args()


def main() -> None:
    args = parse_args()
    flat = json.loads(Path(args.config).read_text())
    cfg = parse_config(flat)
    apply_run_options(cfg.run, cfg.train.device)
    torch.manual_seed(cfg.train.seed)
    trial = MobileVLATrial(cfg, load_dataset(cfg.data, progress=False))
    trainer, device = trial.trainer, trial.trainer.device
    Path(args.ready).touch()
    while not Path(args.start).exists():
        time.sleep(0.01)
    torch.cuda.reset_peak_memory_stats(device)
    samples, began = 0, time.perf_counter()
    for epoch in count():
        for micro_batches, _ in trial.steps(epoch):
            trainer.step(micro_batches, trial.loss, trial.count_targets)
            samples += cfg.train.batch_size
            if time.perf_counter() - began > args.seconds:
                break
        else:
            continue
        break
    torch.cuda.synchronize(device)
    seconds = time.perf_counter() - began
    result = {
        "samples": samples,
        "seconds": seconds,
        "samples_per_s": samples / seconds,
        "peak_mb": torch.cuda.max_memory_allocated(device) / 2**20,
        "derived": {k: v for k, v in trial.derived.items() if isinstance(v, (int, float, str))},
    }
    Path(args.out).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
