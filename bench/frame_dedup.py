"""Frame sharing: per-window vs deduplicated vs deduplicated + cached image features.

    python bench/frame_dedup.py                          # CPU, real widths, 2 layers/tower
    python bench/frame_dedup.py --device cuda --model real [--peak-tflops 989]
    python bench/frame_dedup.py --model /path/to/kosmos-2-checkout

Writes demo episodes (18 frames) and, by default, a Kosmos-2 with the real widths (vision
1024 at 224 px, text 2048, 64 image tokens) but `--layers` layers per tower and random
weights, saved and loaded through `--model DIR` like a real checkout. Then one policy
trains on the same optimizer steps three ways, interleaved step by step (the order rotates):

  per-window  every frame of every window through the whole backbone (`frame_dedup: false`)
  dedup       each distinct frame of a micro-batch once, windows gathered from them
  cached      dedup, with the frozen image tokens computed once before (vision skipped)

A step is `--batch` windows from whole episodes (the trainable's episode grouping), cut into
micro-batches of at most `--micro-frames` backbone frames; each step is the project's own
FrameBatches + Trainer.step. Reported per method: training samples/s (median step time),
backbone frame passes per window, peak memory (CUDA: allocated; CPU: the process's resident
growth during its steps, sampled). Before timing, the loss and every trainable gradient of
per-window and dedup are compared on the same weights. The last line is

    dedup_speedup=<x> cached_speedup=<y> max_grad_rel_diff=<z>

with speedups in samples/s over per-window and z the largest relative difference
(||g_dedup - g_window|| / ||g_window||) of any trainable parameter's gradient.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import torch
from common import (
    BenchError,
    demo_data_and_model,
    model_flops,
    peak_memory,
    release_memory,
    run_bench,
    synchronize,
)
from transformers import Kosmos2Config

from trainables.mobile_vla.backbone import cast_frozen
from trainables.mobile_vla.configuration_mobile_vla import ModelConfig
from trainables.mobile_vla.dataset import MobileVLAData
from trainables.mobile_vla.frame_batches import (
    FrameBatches,
    grouped_order,
    predict,
    split_by_frames,
)
from trainables.mobile_vla.image_features import FeatureStore, load_or_compute, weights_key
from trainables.mobile_vla.modeling_mobile_vla import build_policy
from trainables.training import TrainConfig, Trainer, plan_batches

METHODS = ("per-window", "dedup", "cached")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--model", default="widths", help="'widths' (default), 'real' or a dir")
    p.add_argument("--layers", type=int, default=2, help="layers per tower for 'widths'")
    p.add_argument("--episodes", type=int, default=4, help="demo episodes (18 frames each)")
    p.add_argument("--batch", type=int, default=11, help="windows per optimizer step")
    p.add_argument("--micro-frames", type=int, default=64, help="backbone frames/micro-batch")
    p.add_argument("--steps", type=int, default=2, help="timed steps per method")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--peak-tflops", type=float, default=989.0, help="GPU bf16 dense peak")
    args = p.parse_args(argv)
    if args.model == "real" and args.device != "cuda":
        p.error("--model real (1.6B parameters) needs --device cuda")
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: CUDA is not available here")
    if args.model not in ("widths", "real") and not Path(args.model).is_dir():
        p.error(f"--model: {args.model!r} is not 'widths', 'real' or a directory")
    return args


def kosmos_config(args: argparse.Namespace) -> Kosmos2Config:
    if args.model == "real":
        return Kosmos2Config()
    return Kosmos2Config(
        text_config={"layers": args.layers}, vision_config={"num_hidden_layers": args.layers}
    )


class PeakMemory:
    """Peak memory of a block: CUDA's allocator, or on CPU the sampled resident growth."""

    def __init__(self, device: torch.device):
        self.device, self.peak_mb = device, 0.0

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            synchronize(self.device)
            release_memory(self.device)  # resets the peak
            self.base = torch.cuda.memory_allocated(self.device) / 2**20
            return self
        self.process, self.stop = psutil.Process(), threading.Event()
        self.base = self.top = self.process.memory_info().rss

        def sample() -> None:
            while not self.stop.wait(0.005):
                self.top = max(self.top, self.process.memory_info().rss)

        self.thread = threading.Thread(target=sample, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            synchronize(self.device)
            growth = peak_memory(self.device) - self.base
        else:
            self.stop.set()
            self.thread.join()
            growth = (max(self.top, self.process.memory_info().rss) - self.base) / 2**20
        self.peak_mb = max(self.peak_mb, growth)


def training_steps(data: MobileVLAData, batch: int, steps: int) -> list[np.ndarray]:
    order = grouped_order(data.train.episode, seed=0, epoch=0)
    if len(order) < batch * steps:
        raise BenchError(f"need {batch * steps} windows, the data has {len(order)}: --episodes")
    return [order[i * batch : (i + 1) * batch] for i in range(steps)]


def gradients(policy, micro_batches: list[dict]) -> tuple[float, dict[str, torch.Tensor]]:
    """Loss and trainable gradients with dropout off (Kosmos-2's text tower has 0.1): a
    frame shared by windows draws one dropout mask, a per-window frame one per window."""
    policy.eval()
    policy.zero_grad(set_to_none=True)
    total = sum(b["count"] for b in micro_batches)
    loss = 0.0
    for batch in micro_batches:
        s, _ = policy.compute_loss(predict(policy, batch), batch["target"], batch["mask"])
        (s / total).backward()
        loss += s.item() / total
    grads = {n: p.grad.float().clone() for n, p in policy.named_parameters() if p.grad is not None}
    policy.zero_grad(set_to_none=True)
    return loss, grads


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    precision = "bf16" if device.type == "cuda" else "fp32"
    with tempfile.TemporaryDirectory(prefix="bench-dedup-") as tmp:
        root = Path(tmp)
        kosmos = kosmos_config(args) if args.model in ("widths", "real") else None
        data, model, _ = demo_data_and_model(root, args.episodes, args.model, kosmos, device)
        run(
            args, ModelConfig(model=model), data, device, precision, FeatureStore(root / "features")
        )


def run(args, cfg: ModelConfig, data: MobileVLAData, device, precision: str, store) -> None:
    torch.manual_seed(0)
    policy, tokenizer = build_policy(cfg, data.instructions)
    weights = weights_key(policy)
    train_cfg = TrainConfig(batch_size=args.batch, precision=precision, device=args.device)
    trainer = Trainer(policy, train_cfg, plan_batches(train_cfg, args.batch))
    policy.to(device)
    if precision != "fp32":
        cast_frozen(policy, torch.bfloat16)
    started = time.perf_counter()
    features, _ = load_or_compute(policy, data.images, precision, store, weights, progress=False)
    feature_seconds = time.perf_counter() - started
    makers = {
        "per-window": FrameBatches(data, tokenizer, device, dedup=False),
        "dedup": FrameBatches(data, tokenizer, device, dedup=True),
        "cached": FrameBatches(data, tokenizer, device, True, features),
    }
    steps = training_steps(data, args.batch, args.steps + 1)

    def micro(method: str, step: np.ndarray) -> list[dict]:
        dedup = method != "per-window"
        parts = split_by_frames(step, data.train.frames, args.micro_frames, dedup)
        return [makers[method](data.train, part) for part in parts]

    # Exactness first: same weights, same windows (a short step: per-window is slow).
    check = steps[0][: max(2, args.batch // 2)]
    with trainer.autocast():
        ref_loss, ref = gradients(policy, micro("per-window", check))
        dedup_loss, got = gradients(policy, micro("dedup", check))
    rel = max(((got[n] - g).norm() / g.norm().clamp_min(1e-30)).item() for n, g in ref.items())
    print(f"step 0 loss per-window {ref_loss:.6f} dedup {dedup_loss:.6f}; grads of {len(ref)} "
          f"trainable tensors, max relative difference {rel:.2e}")  # fmt: skip

    seconds = {m: [] for m in METHODS}
    rows = {m: 0 for m in METHODS}
    memory = {m: PeakMemory(device) for m in METHODS}
    for i, step in enumerate(steps[1:]):
        order = METHODS[i % 3 :] + METHODS[: i % 3]
        for method in order:
            with memory[method]:
                synchronize(device)
                begin = time.perf_counter()
                batches = micro(method, step)
                trainer.step(batches, policy_loss(policy), lambda b: b["count"])
                synchronize(device)
                seconds[method].append(time.perf_counter() - begin)
            rows[method] += sum(b["rows"] for b in batches)
            print(f"step {i + 1} {method:>10}: {seconds[method][-1]:.2f} s", flush=True)
    text_tokens = makers["dedup"].input_ids.shape[1] + policy.num_image_tokens + 1
    towers = {t.name: t.flops for t in model_flops(policy, text_tokens)}
    report(args, towers, data, seconds, rows, memory, rel, feature_seconds)


def policy_loss(policy):
    def loss_fn(batch: dict):
        return policy.compute_loss(predict(policy, batch), batch["target"], batch["mask"])

    return loss_fn


def report(args, towers, data, seconds, rows, memory, rel, feature_seconds) -> None:
    """The table, then the one line the issue's targets are read from."""
    windows = args.batch * args.steps
    rate = {m: args.batch / statistics.median(s) for m, s in seconds.items()}
    per_frame = {
        "per-window": sum(towers.values()),
        "dedup": sum(towers.values()),
        "cached": towers["text"],
    }
    print(f"\nmodel {args.model} on {args.device}, {len(data.images)} frames at "
          f"{data.images.shape[1]} px, window {data.train.frames.shape[1]}, batch {args.batch} "
          f"windows of whole episodes, micro-batches <= {args.micro_frames} frames, "
          f"{args.steps} timed steps each (interleaved); image features computed once in "
          f"{feature_seconds:.1f} s")  # fmt: skip
    print(f"{'method':>10}  {'samples/s':>9}  {'frames/window':>13}  {'peak MB':>8}  TFLOP/s")
    for m in METHODS:
        flops = per_frame[m] * rows[m] / sum(seconds[m]) / 1e12
        share = f" ({100 * flops / args.peak_tflops:.1f}% of peak)" if args.device == "cuda" else ""
        print(f"{m:>10}  {rate[m]:9.2f}  {rows[m] / windows:13.2f}  "
              f"{memory[m].peak_mb:8.0f}  {flops:.3g}{share}")  # fmt: skip
    dedup, cached = rate["dedup"] / rate["per-window"], rate["cached"] / rate["per-window"]
    print(f"dedup_speedup={dedup:.2f} cached_speedup={cached:.2f} max_grad_rel_diff={rel:.1e}")


if __name__ == "__main__":
    run_bench(main, __file__)
