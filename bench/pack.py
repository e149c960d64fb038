"""Packed trials against separate trial processes: summed samples/s and peak memory.

    python bench/pack.py [--quick] [--device cpu|cuda] [--ks 1,2,4] [--epochs 1]

For K = 1, 2, 4 trials of one size (the same config but the seed, as a sweep's trials
differ only in hyperparameters), two ways, each in fresh processes:

  packed   - one process holds a `trainables.packing.pack.Pack` of the K members and
             trains `--epochs` epochs of all of them together (`Pack.run_epoch`);
  separate - K processes at once, each running the unpacked trial
             (`MobileVLATrial` + `trainables.trial_loop.run_epochs`), as K trial
             workers would.

Every process builds its trial(s) first, then all of one way start training together
(a barrier). Summed samples/s = every member's training windows of every epoch / the
wall time from that start until the last member's last epoch is done (training,
validation and checkpoint, as a sweep pays them). Peak memory: each process's own
resident peak on CPU (`ru_maxrss`), its CUDA allocator peak on a GPU; the separate way
sums its K peaks. The CPU's cores are shared fairly: the packed process gets all
`--threads`, each separate process `--threads // K` (at least 1).

Without `--quick` the backbone is a Kosmos-2 with the real widths (text 2048, vision
1024 at 224 px, 64 image tokens) but `--layers` layers per tower and random weights;
`--quick` uses the tiny model. The last line is one `key=value` line:

    speed_1=.. speed_2=.. speed_4=.. memory_1=.. memory_2=.. memory_4=..

speed_K = packed over separate summed samples/s; memory_K = packed peak over the summed
separate peaks. `measure_packing` is the reusable part (bench/gpu.py's packing part).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from common import BenchError, run_bench, write_random_kosmos2
from transformers import Kosmos2Config

BARRIER_TIMEOUT_S = 1800


def process_peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def samples_of(config: dict[str, Any], num_train: int, epochs: int) -> int:
    batch = int(config["batch_size"])
    return (num_train // batch) * batch * epochs


def packed_worker(configs: list[dict], epochs: int, threads: int, barrier, results) -> None:
    """One process: a pack of every config, `epochs` epochs together."""
    import shutil

    from trainables.mobile_vla.dataset import load_dataset
    from trainables.mobile_vla.trainable import MobileVLATrial
    from trainables.packing.pack import Pack

    torch.set_num_threads(threads)
    data = load_dataset(MobileVLATrial.parse_config(configs[0]).data, progress=False)
    pack = Pack(len(configs), data, threads=threads)
    keys = [str(i) for i in range(len(configs))]
    for key, config in zip(keys, configs, strict=True):
        pack.join(key, config)
    barrier.wait(BARRIER_TIMEOUT_S)
    started = time.perf_counter()
    for _ in range(epochs):
        for key, result in pack.run_epoch(keys).items():
            if result.error:
                raise RuntimeError(f"member {key}: {result.error}")
            shutil.rmtree(result.checkpoint_dir)
    seconds = time.perf_counter() - started
    device = pack.base.device
    samples = sum(samples_of(c, len(data.train), epochs) for c in configs)
    results.put({"seconds": seconds, "samples": samples, "peak_mb": process_peak_mb(device)})


def separate_worker(config: dict, epochs: int, threads: int, barrier, results) -> None:
    """One process: the unpacked trial, as a trial worker runs it."""
    from trainables.memory import TrialMemory
    from trainables.mobile_vla.dataset import load_dataset
    from trainables.mobile_vla.trainable import MobileVLATrial
    from trainables.training import resolve_device
    from trainables.trial_loop import apply_run_options, run_epochs

    config = {**config, "torch_threads": threads, "max_epochs": epochs}
    cfg = MobileVLATrial.parse_config(config)
    apply_run_options(cfg.run, cfg.train.device)
    torch.manual_seed(cfg.train.seed)
    data = load_dataset(cfg.data, progress=False)
    trial = MobileVLATrial(cfg, data)
    device = resolve_device(cfg.train.device)
    barrier.wait(BARRIER_TIMEOUT_S)
    started = time.perf_counter()
    with TrialMemory(device) as memory:
        run_epochs(trial, config, lambda metrics, directory: None, memory=memory)
    seconds = time.perf_counter() - started
    samples = samples_of(config, len(data.train), epochs)
    results.put({"seconds": seconds, "samples": samples, "peak_mb": process_peak_mb(device)})


def run_processes(target, arguments: list[tuple]) -> list[dict]:
    """Start one fresh process per argument tuple (+ barrier, queue), all at once."""
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(len(arguments)), context.Queue()
    processes = [
        context.Process(target=target, args=(*args, barrier, results)) for args in arguments
    ]
    for process in processes:
        process.start()
    outputs = [results.get(timeout=BARRIER_TIMEOUT_S * 2) for _ in processes]
    for process in processes:
        process.join()
        if process.exitcode:
            raise BenchError(f"a {target.__name__} process exited with {process.exitcode}")
    return outputs


def members(config: dict[str, Any], k: int, epochs: int) -> list[dict[str, Any]]:
    """K copies of one trial's config; member i gets `seed` i (the same work each)."""
    return [{**config, "seed": i, "max_epochs": epochs} for i in range(k)]


def packed_once(configs: list[dict], epochs: int, threads: int) -> dict[str, float]:
    """One pack of these members in a fresh process: summed samples/s and peak MB."""
    packed = run_processes(packed_worker, [(configs, epochs, threads)])[0]
    return {
        "packed_samples_per_s": packed["samples"] / packed["seconds"],
        "packed_peak_mb": packed["peak_mb"],
    }


def one_round(configs: list[dict], epochs: int, threads: int) -> dict[str, float]:
    """Both ways once: (summed samples/s, peak MB) packed and separate."""
    packed = packed_once(configs, epochs, threads)
    per_process = max(1, threads // len(configs))
    separate = run_processes(separate_worker, [(c, epochs, per_process) for c in configs])
    wall = max(s["seconds"] for s in separate)
    return packed | {
        "separate_samples_per_s": sum(s["samples"] for s in separate) / wall,
        "separate_peak_mb": sum(s["peak_mb"] for s in separate),
    }


def packed_only(
    config: dict[str, Any], ks: tuple[int, ...], epochs: int, threads: int
) -> list[dict[str, float]]:
    """Per K: one pack of K members in a fresh process, summed samples/s and peak MB; for
    a card, whose separate processes `bench/gpu_share.py` already measured (K full-size
    trial processes would not fit it past a few)."""
    rows = []
    for k in ks:
        row = {"k": k} | packed_once(members(config, k, epochs), epochs, threads)
        print(
            f"K={k}: packed {row['packed_samples_per_s']:.1f} samples/s, "
            f"{row['packed_peak_mb']:.0f} MB peak",
            flush=True,
        )
        rows.append(row)
    return rows


def measure_packing(
    config: dict[str, Any], ks: tuple[int, ...], epochs: int, threads: int, rounds: int = 2
) -> list[dict[str, float]]:
    """Per K: packed and separate summed samples/s and peak MB, and their ratios.
    `config` is one trial's flat config (see `members`). The two ways alternate `rounds`
    times; each keeps its best round (the least disturbed by whatever else the machine
    runs) and its largest peak."""
    rows = []
    for k in ks:
        configs = members(config, k, epochs)
        tries = [one_round(configs, epochs, threads) for _ in range(rounds)]
        row = {"k": k} | {key: max(t[key] for t in tries) for key in tries[0]}
        row["speed"] = row["packed_samples_per_s"] / row["separate_samples_per_s"]
        row["memory"] = row["packed_peak_mb"] / row["separate_peak_mb"]
        print(
            f"K={k}: packed {row['packed_samples_per_s']:.1f} samples/s, "
            f"{row['packed_peak_mb']:.0f} MB peak | {k} separate "
            f"{row['separate_samples_per_s']:.1f} samples/s, {row['separate_peak_mb']:.0f} MB "
            f"summed peaks | speed {row['speed']:.2f}, memory {row['memory']:.2f}",
            flush=True,
        )
        rows.append(row)
    return rows


def bench_config(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """One trial's config: demo episodes under `root`, the tiny or a real-width model."""
    from trainables.mobile_vla.configuration_mobile_vla import ModelConfig
    from trainables.mobile_vla.dataset import DataConfig, inspect_all, list_episodes, load_dataset
    from trainables.mobile_vla.demo_data import write_demo_episodes

    data_dir = root / "episodes"
    write_demo_episodes(data_dir, args.episodes)
    config = {
        "data_dir": str(data_dir),
        "cache_dir": str(root / "cache"),
        "val_ratio": 0.1,
        "batch_size": args.batch_size,
        "device": args.device,
        "lr_schedule": "cosine",
    }
    size = ModelConfig().image_size() if args.quick else (224, 224)  # decode once, here
    load_dataset(DataConfig(data_dir=str(data_dir), image_size=size, cache_dir=str(root / "cache")),
                 progress=False)  # fmt: skip
    if args.quick:
        return config
    _, instructions, _ = inspect_all(
        list_episodes(data_dir, "episode_*.h5"), DataConfig(data_dir=str(data_dir))
    )
    model = root / "kosmos2-widths"
    kosmos = Kosmos2Config(
        text_config={"layers": args.layers}, vision_config={"num_hidden_layers": args.layers}
    )
    write_random_kosmos2(model, instructions, kosmos, torch.device(args.device))
    return {**config, "model": str(model)}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the tiny model (default: widths)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--ks", default="1,2,4", help="pack sizes K (default 1,2,4)")
    parser.add_argument("--epochs", type=int, default=1, help="timed epochs (default 1)")
    parser.add_argument("--rounds", type=int, default=2, help="alternations (best kept)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--episodes", type=int, default=None, help="demo episodes")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--layers", type=int, default=1, help="layers per tower (widths)")
    args = parser.parse_args()
    if args.episodes is None:
        args.episodes = 16 if args.quick else 4
    return args


def main() -> None:
    args = parse_args()
    try:
        ks = tuple(int(k) for k in args.ks.split(","))
    except ValueError:
        raise BenchError(f"--ks: expected comma-separated integers, got {args.ks!r}") from None
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise BenchError("--device cuda: no CUDA device here")
    with tempfile.TemporaryDirectory(prefix="bench-pack-") as tmp:
        config = bench_config(args, Path(tmp))
        model = "tiny" if args.quick else f"real widths, {args.layers} layer(s) per tower"
        print(f"model: {model}; batch {args.batch_size}; {args.epochs} epoch(s); "
              f"{args.threads} threads; device {args.device}", flush=True)  # fmt: skip
        rows = measure_packing(config, ks, args.epochs, args.threads, args.rounds)
    print(" ".join(f"speed_{r['k']}={r['speed']:.2f}" for r in rows), end=" ")
    print(" ".join(f"memory_{r['k']}={r['memory']:.2f}" for r in rows), flush=True)


if __name__ == "__main__":
    run_bench(main, __file__)
