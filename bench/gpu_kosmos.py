"""bench/gpu.py's Mobile VLA measurements on one loaded policy: the three step paths in a
precision, gradient checkpointing on and off, and the largest micro-batch a card holds.

Every step is the project's own: FrameBatches builds the micro-batches, Trainer.step
trains (autocast, GradScaler, clipping, AdamW), image features come from the feature
cache code the trials use.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from common import release_memory
from gpu_common import GB, counted_flops, memory_budget, timed_steps

from trainables.gradient_checkpointing import disable_gradient_checkpointing
from trainables.micro_batch import largest_fitting, try_micro_batch
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
from trainables.mobile_vla.modeling_mobile_vla import (
    MobileVLAPolicy,
    build_policy,
    checkpoint_towers,
)
from trainables.training import TrainConfig, Trainer, TrainingError, plan_batches

METHODS = ("per-window", "shared-frame", "cached")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Loaded:
    """One policy on the device, loaded through the real checkout path, and its data."""

    policy: MobileVLAPolicy
    tokenizer: object
    weights: str  # weights_key of the fp32 weights (names the feature cache entries)
    data: MobileVLAData
    device: torch.device
    store: FeatureStore

    @classmethod
    def load(cls, model_dir: str, data: MobileVLAData, device: torch.device, cache: Path):
        torch.manual_seed(0)
        policy, tokenizer = build_policy(ModelConfig(model=model_dir), data.instructions)
        policy.to(device)
        weights = weights_key(policy)
        return cls(policy, tokenizer, weights, data, device, FeatureStore(cache / "features"))

    def order(self, windows: int) -> np.ndarray:
        """`windows` training windows of whole episodes (repeating the epoch if short)."""
        return np.resize(grouped_order(self.data.train.episode, seed=0, epoch=0), windows)


@dataclass
class PathResult:
    method: str
    precision: str
    samples_per_s: float
    peak_mb: float | None
    tflops_per_step: float
    step_s: float
    frames_per_window: float


def set_gradient_checkpointing(policy: MobileVLAPolicy, on: bool) -> None:
    """The trial's own switch (`gradient_checkpointing: true`) on the loaded policy, and off."""
    if on:
        checkpoint_towers(policy)
    else:
        disable_gradient_checkpointing(policy.kosmos.text_model)
        disable_gradient_checkpointing(policy.kosmos.vision_model)


def loss_of(policy: MobileVLAPolicy):
    def loss_fn(batch: dict):
        return policy.compute_loss(predict(policy, batch), batch["target"], batch["mask"])

    return loss_fn


def count(batch: dict) -> int:
    return batch["count"]


def trainer_for(run: Loaded, precision: str, batch: int) -> Trainer:
    cfg = TrainConfig(batch_size=batch, precision=precision, device=str(run.device))
    return Trainer(run.policy, cfg, plan_batches(cfg, max(batch, len(run.data.train))))


def makers(run: Loaded, precision: str) -> dict[str, FrameBatches]:
    """The three paths' batch builders; the cached one with this precision's features."""
    features, _ = load_or_compute(
        run.policy, run.data.images, precision, run.store, run.weights, progress=False
    )
    data, tok, dev = run.data, run.tokenizer, run.device
    return {
        "per-window": FrameBatches(data, tok, dev, dedup=False),
        "shared-frame": FrameBatches(data, tok, dev, dedup=True),
        "cached": FrameBatches(data, tok, dev, True, features),
    }


def path_rates(
    run: Loaded, precision: str, batch: int, micro_frames: int, steps: int
) -> list[PathResult]:
    """samples/s, peak memory and counted FLOPs of the three paths, on the same windows."""
    cast_frozen(run.policy, DTYPES.get(precision, torch.float32))
    trainer = trainer_for(run, precision, batch)
    build = makers(run, precision)
    loss_fn = loss_of(run.policy)
    order = run.order(batch * (steps + 1))
    results = []
    for method in METHODS:
        dedup = method != "per-window"

        def step(i: int, method: str = method, dedup: bool = dedup) -> float:
            chunk = order[i * batch : (i + 1) * batch]
            parts = split_by_frames(chunk, run.data.train.frames, micro_frames, dedup)
            micro = [build[method](run.data.train, part) for part in parts]
            trainer.step(micro, loss_fn, count)
            return sum(b["rows"] for b in micro)

        rows: list[int] = []
        timing = timed_steps(
            run.device, [lambda i=i, rows=rows: rows.append(step(i)) for i in range(steps + 1)]
        )
        flops = counted_flops(lambda: step(0))
        results.append(
            PathResult(
                method=method,
                precision=precision,
                samples_per_s=batch / timing.median,
                peak_mb=timing.peak_mb,
                tflops_per_step=flops / 1e12,
                step_s=timing.median,
                frames_per_window=float(np.mean(rows)) / batch,
            )
        )
        release_memory(run.device)
    return results


def checkpointing_rates(
    run: Loaded, batch: int, steps: int, precision: str = "bf16"
) -> dict[bool, PathResult]:
    """The cached path, all `batch` windows in one micro-batch, checkpointing off and on."""
    cast_frozen(run.policy, DTYPES.get(precision, torch.float32))
    trainer = trainer_for(run, precision, batch)
    cached = makers(run, precision)["cached"]
    loss_fn = loss_of(run.policy)
    order = run.order(batch * (steps + 1))
    results = {}
    for on in (False, True):
        set_gradient_checkpointing(run.policy, on)

        def step(i: int) -> None:
            micro = [cached(run.data.train, order[i * batch : (i + 1) * batch])]
            trainer.step(micro, loss_fn, count)

        timing = timed_steps(run.device, [lambda i=i: step(i) for i in range(steps + 1)])
        results[on] = PathResult(
            "cached", precision, batch / timing.median, timing.peak_mb, 0.0, timing.median, 0.0
        )
    set_gradient_checkpointing(run.policy, False)
    return results


@dataclass
class Fit:
    budget_gb: float
    checkpointing: bool
    windows: int  # the largest micro-batch (windows of whole episodes) that fits; 0: none
    frames: int  # the distinct backbone frames of that micro-batch
    tried_up_to: int  # the largest micro-batch tried (the probe starts there)


def largest_fit(
    run: Loaded, budget_gb: float, checkpointing: bool, limit: int, precision: str = "bf16"
) -> Fit:
    """The trial's own probe (`largest_fitting`: halving from `limit` windows on
    out-of-memory) on the cached path, in a card of `budget_gb` (the allocator capped, the
    process's memory outside it counted); the trainable state (LoRA, head, AdamW moments)
    is resident. 0 when one window does not fit."""
    cast_frozen(run.policy, DTYPES.get(precision, torch.float32))
    trainer = trainer_for(run, precision, 1)
    cached = makers(run, precision)["cached"]
    loss_fn = loss_of(run.policy)
    order = run.order(limit)
    set_gradient_checkpointing(run.policy, checkpointing)
    # The AdamW moments exist from the first step on: make them before measuring.
    trainer.step([cached(run.data.train, order[:1])], loss_fn, count)

    def try_size(windows: int) -> None:
        try_micro_batch(trainer, cached(run.data.train, order[:windows]), loss_fn)
        torch.cuda.synchronize(run.device)

    with memory_budget(run.device, budget_gb * GB):
        try:
            best = largest_fitting(try_size, limit, 1, "one window", run.device)
        except TrainingError:
            best = 0
    set_gradient_checkpointing(run.policy, False)
    frames = len(np.unique(run.data.train.frames[order[:best]])) if best else 0
    return Fit(budget_gb, checkpointing, best, frames, limit)
