"""Training samples/s: the project's training loop vs a minimal plain-PyTorch loop.

    python bench/trainable_step.py [--threads 2] [--rounds 3] [--epochs 6]
    python bench/trainable_step.py --device cuda --model real [--peak-tflops 989]
    python bench/trainable_step.py --device cuda --model /path/to/kosmos-2-checkout

Writes demo episodes (default size) to a temporary folder, loads them at the model's image
size (cache inside that folder), keeps `steps_per_epoch x batch_size` training windows and
trains the same freshly built policy (same seed, config, windows, window order, batch and
micro-batches) two ways:

  project - `trainables.mobile_vla.trainable.train()` itself. Timed per optimizer step:
            one iteration of its loop, i.e. `FrameBatches` (gather + copy to the device)
            for every micro-batch, then `Trainer.step`. Not timed, as in train()'s own
            `train_seconds`: set-up and, after each epoch, validation (off here),
            metrics, checkpoint saving and the report.
  plain   - the same policy and data in a loop written directly in PyTorch
            (bench/plain_loop.py).

Both first run `--warmup-epochs` untimed epochs (they include the project's first-step
guard), then `--epochs` timed epochs of `--steps-per-epoch` optimizer steps. The LR
schedule is constant without warmup and weight decay is 0, so both loops compute the same
thing; their mean losses are printed side by side as a check (equal on CPU without
dropout; the tiny model has none). How the two alternate (`--interleave step|run`,
`--rounds` times, each round on fresh models) is told in bench/rounds.py.

`--model real` (CUDA only) writes a Kosmos-2 with transformers' default `Kosmos2Config()`
sizes (kosmos-2-patch14-224: text 24 layers x 2048, ViT-L/14 at 224, 64 image tokens)
and random weights to a temporary directory with `save_backbone`, then loads it through
`ModelConfig(model=dir)` like a real checkout. On CUDA both loops train under bf16
autocast, and the output adds achieved model TFLOP/s and their share of `--peak-tflops`.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
from pathlib import Path
from typing import Any

import torch
from common import (
    FLOPS_FORMULA,
    demo_data_and_model,
    release_memory,
    run_bench,
    subset_windows,
)
from rounds import METHODS, RoundResult, round_run_mode, round_step_mode
from transformers import Kosmos2Config

from trainables.mobile_vla.dataset import MobileVLAData

REAL = "real"
TINY = "tiny"
# Defaults per model size: (batch_size, micro_batch_size). The tiny CPU default keeps the
# run under ~3 minutes on 2 busy cores and still accumulates over 4 micro-batches; the
# real one is the grid's smallest batch with micro-batches that fit an 80 GB GPU easily.
DEFAULT_BATCH = {TINY: (32, 8), REAL: (128, 16)}


def trial_config(args: argparse.Namespace, data_dir: Path, model: str) -> dict[str, Any]:
    """The flat trial config both loops read (through the project's parse_config)."""
    return {
        "data_dir": str(data_dir),
        "val_ratio": 0.0,
        "model": model,
        "batch_size": args.batch_size,
        "micro_batch_size": args.micro_batch,
        "max_epochs": args.warmup_epochs + args.epochs,
        "learning_rate": 1e-4,
        "weight_decay": 0.0,  # plain AdamW then equals the project's two-group AdamW
        "warmup_ratio": 0.0,  # constant LR: the plain loop has no scheduler
        "lr_schedule": "constant",
        "grad_clip": 1.0,
        "precision": "bf16" if args.device == "cuda" else "fp32",
        "device": args.device,
        "seed": args.seed,
        "torch_threads": args.threads,
        # The plain loop runs every frame of iid windows: the project's reference path
        # (bench/frame_dedup.py measures frame sharing).
        "batch_grouping": "window",
        "frame_dedup": False,
        "feature_cache": False,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument(
        "--model",
        default=TINY,
        help="'tiny', 'real' (random Kosmos2Config() weights; CUDA only) or a Kosmos-2 dir",
    )
    parser.add_argument("--episodes", type=int, default=32, help="demo episodes to write")
    parser.add_argument(
        "--batch-size", type=int, default=None, help="default: 32 (tiny), 128 (real / dir)"
    )
    parser.add_argument(
        "--micro-batch", type=int, default=None, help="default: 8 (tiny), 16 (real / dir)"
    )
    parser.add_argument("--steps-per-epoch", type=int, default=2)
    parser.add_argument("--warmup-epochs", type=int, default=1, help="untimed epochs first")
    parser.add_argument("--epochs", type=int, default=6, help="timed epochs per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds on fresh models")
    parser.add_argument(
        "--interleave",
        choices=("step", "run"),
        default=None,
        help="alternate per optimizer step or per whole run; default: step on CPU, run on CUDA",
    )
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--peak-tflops", type=float, default=989.0, help="the GPU's dense bf16 peak (H100 SXM)"
    )
    args = parser.parse_args(argv)
    size = TINY if args.model == TINY else REAL
    if args.batch_size is None:
        args.batch_size = DEFAULT_BATCH[size][0]
    if args.micro_batch is None:
        args.micro_batch = min(DEFAULT_BATCH[size][1], args.batch_size)
    if args.interleave is None:
        args.interleave = "step" if args.device == "cpu" else "run"
    for key in ("episodes", "batch_size", "micro_batch", "steps_per_epoch", "epochs"):
        if getattr(args, key) < 1:
            parser.error(f"--{key.replace('_', '-')} must be >= 1")
    if args.rounds < 1 or args.threads < 1 or args.warmup_epochs < 0:
        parser.error("--rounds and --threads must be >= 1, --warmup-epochs >= 0")
    if args.batch_size % args.micro_batch:
        parser.error(f"--batch-size {args.batch_size} is not a multiple of --micro-batch")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available here (torch.cuda.is_available())")
    if args.device == "cuda" and not torch.cuda.is_bf16_supported():
        parser.error("--device cuda: this GPU has no bf16; the benchmark compares bf16 loops")
    if args.model == REAL and args.device != "cuda":
        parser.error("--model real (1.6B parameters) needs --device cuda")
    if args.model not in (TINY, REAL) and not Path(args.model).is_dir():
        parser.error(f"--model: {args.model!r} is not 'tiny', 'real' or a directory")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory(prefix="bench-trainable-") as tmp:
        root = Path(tmp)
        kosmos = Kosmos2Config() if args.model == REAL else None
        data, model, data_dir = demo_data_and_model(root, args.episodes, args.model, kosmos, device)
        count = args.steps_per_epoch * args.batch_size
        data = dataclasses.replace(data, train=subset_windows(data.train, count, args.seed))
        config = trial_config(args, data_dir, model)
        one_round = round_step_mode if args.interleave == "step" else round_run_mode
        results: dict[str, list[RoundResult]] = {name: [] for name in METHODS}
        for index in range(args.rounds):
            outcome = one_round(config, data, args.warmup_epochs, index % 2)
            release_memory(device)
            for name in METHODS:
                result = outcome[name]
                results[name].append(result)
                print(
                    f"round {index + 1}/{args.rounds} {name:>7}: {result.rate:9.2f} samples/s "
                    f"({result.samples} samples in {result.seconds:.2f} s, "
                    f"loss {result.loss:.6f})",
                    flush=True,
                )
    report(args, config, data, results)


def report(
    args: argparse.Namespace,
    config: dict[str, Any],
    data: MobileVLAData,
    results: dict[str, list[RoundResult]],
) -> None:
    towers, trainable = results["plain"][0].towers, results["plain"][0].trainable
    window = data.train.frames.shape[1]
    print(
        f"\nmodel {args.model} on {args.device} ({config['precision']}, {args.threads} torch "
        f"threads), {trainable:,} trainable params; batch {args.batch_size} = "
        f"{args.batch_size // args.micro_batch} x micro {args.micro_batch}, window {window}; "
        f"{args.rounds} rounds of {args.warmup_epochs} warm-up + {args.epochs} timed epochs "
        f"x {args.steps_per_epoch} steps; interleaved per {args.interleave}"
    )
    print(
        "timed: project = train()'s loop body per step (FrameBatches for each micro-batch "
        "+ Trainer.step); plain = gather, forward, loss, backward, clip, AdamW. Not timed: "
        "set-up, warm-up epochs (incl. the first-step guard), end-of-epoch "
        "metrics/checkpoint/report (no validation windows)"
    )
    if args.interleave == "step":
        # Per-step times: a median is robust to a busy neighbour slowing a few steps.
        rates = {
            name: args.batch_size / statistics.median(s for r in runs for s in r.step_seconds)
            for name, runs in results.items()
        }
        pairs = [
            q / p
            for rp, rq in zip(results["project"], results["plain"], strict=True)
            for p, q in zip(rp.step_seconds, rq.step_seconds, strict=True)
        ]
        how = f"from the median of {len(pairs)} step times"
    else:
        rates = {name: statistics.median(r.rate for r in runs) for name, runs in results.items()}
        pairs = [p.rate / q.rate for p, q in zip(results["project"], results["plain"], strict=True)]
        how = f"median of {args.rounds} rounds"
    frame_flops = sum(t.flops for t in towers)
    for name, rate in rates.items():
        tflops = frame_flops * window * rate / 1e12
        line = f"{name:>7}: {rate:9.2f} samples/s ({how}), model {tflops:.3g} TFLOP/s"
        if args.device == "cuda":
            line += f" = {100 * tflops / args.peak_tflops:.1f}% of the {args.peak_tflops:g} peak"
            peaks = [r.peak_mem_mb for r in results[name] if r.peak_mem_mb is not None]
            if peaks:
                line += f", peak memory {max(peaks) / 1024:.1f} GiB"
        print(line)
    losses = {name: statistics.median(r.loss for r in runs) for name, runs in results.items()}
    print(
        f"same computation: mean timed train loss project {losses['project']:.6f}, "
        f"plain {losses['plain']:.6f}"
    )
    print("model FLOPs per frame (estimate):")
    for t in towers:
        print(
            f"  {t.name:>9}: T={t.tokens:4d}, frozen P={t.frozen:>13,}, trainable "
            f"P={t.trainable:>11,}, backward {'yes' if t.backward else 'no':>3}: "
            f"{t.flops / 1e9:10.3f} GFLOP"
        )
    print(f"  total {frame_flops / 1e9:.3f} GFLOP/frame, {window} frames per sample")
    print("  " + FLOPS_FORMULA.replace("\n", "\n  "))
    kind = "per-step" if args.interleave == "step" else "per-round"
    print(
        f"{kind} project / plain: median {statistics.median(pairs):.3f}, "
        f"min {min(pairs):.3f}, max {max(pairs):.3f} ({len(pairs)} pairs)"
    )
    if args.interleave == "step":
        # Neighbours' load swings step times far more than the loops differ; a pair runs
        # back to back, so the median of the pairs' ratios is the robust figure.
        print(f"ratio of the two rates above: {rates['project'] / rates['plain']:.2f}")
        ratio = statistics.median(pairs)
    else:
        ratio = rates["project"] / rates["plain"]
    print(f"project / plain = {ratio:.2f}")


if __name__ == "__main__":
    run_bench(main, __file__)
