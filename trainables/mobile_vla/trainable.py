"""One trial: LoRA fine-tune of the Mobile VLA policy, one report per epoch.

    train(config, report, data=None, checkpoint_dir=None)

`config` is the flat dict a search space produces; `report(metrics, checkpoint_dir)` is
the one hook to the outside (Ray Tune's report, or a printed line when standalone).
Set-up is a handful of named steps; the loop below is the whole of training.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainables.mobile_vla.dataset import MobileVLAData, load_dataset
from trainables.mobile_vla.frame_batches import (
    FrameBatches,
    epoch_steps,
    frames_per_micro_batch,
    predict,
    split_by_frames,
)
from trainables.mobile_vla.image_features import (
    FeatureStore,
    ImageFeatures,
    load_or_compute,
    weights_key,
)
from trainables.mobile_vla.modeling_mobile_vla import (
    MobileVLAPolicy,
    build_policy,
    cast_frozen,
    load_trainable,
    parameter_counts,
    save_trainable,
    trainable_image_side,
)
from trainables.mobile_vla.trial_config import TrialConfig, parse_config
from trainables.mobile_vla.windows import Windows
from trainables.training import (
    BatchPlan,
    Trainer,
    load_training_state,
    peak_memory_mb,
    plan_batches,
    save_training_state,
    trial_metrics,
)

Report = Callable[[dict[str, Any], str], None]
# A prediction within half a nominal command of zero counts as "no motion".
DIRECTION_DEADBAND = 0.5


def count_targets(batch: dict) -> int:
    """Real (unmasked) target elements: what `action_loss` counts."""
    return batch["count"]


def batch_loss(policy: MobileVLAPolicy) -> Callable:
    def loss_fn(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return policy.compute_loss(predict(policy, batch), batch["target"], batch["mask"])

    return loss_fn


def image_features_for(
    policy: MobileVLAPolicy, data: MobileVLAData, cfg: TrialConfig, precision: str, weights: str
) -> tuple[ImageFeatures | None, str]:
    """The frozen image tokens this trial reads instead of running the vision tower, and
    where they came from (logged as `feature_cache`): shared by the sweep, this machine's
    disk cache, or computed here. None (and why) when they would not stay fixed."""
    if not cfg.batching.feature_cache:
        return None, "off (feature_cache: false)"
    if trainable_image_side(policy):
        return None, f"off: {cfg.model.image_side_trains() or 'the vision side trains'}"
    given = data.image_features
    if given is not None and given.weights_key == weights and given.dtype == precision:
        return given, "shared"
    store = FeatureStore.for_cache_dir(cfg.data.cache_dir)
    features, how = load_or_compute(policy, data.images, precision, store, weights, progress=False)
    return features, "disk" if how == "reused" else "computed"


@torch.no_grad()
def evaluate(
    policy: MobileVLAPolicy,
    batches: FrameBatches,
    windows: Windows,
    micro_batches: list[np.ndarray],
    trainer: Trainer,
    action_names: tuple[str, ...],
    bound: float,
) -> dict[str, float]:
    """val_loss, MAE per action dim in original units, and direction accuracy."""
    policy.eval()
    loss_sum, count = 0.0, 0
    abs_err = torch.zeros(len(action_names), dtype=torch.float64)
    agree, real = 0, 0
    for indices in micro_batches:
        batch = batches(windows, indices)
        with trainer.autocast():
            pred = predict(policy, batch)
        s, n = policy.compute_loss(pred, batch["target"], batch["mask"])
        loss_sum, count = loss_sum + s.item(), count + int(n)
        mask = batch["mask"].bool()
        pred, target = pred.float()[mask], batch["target"][mask]  # (real, A)
        abs_err += ((pred - target).abs() * bound).sum(dim=0).double().cpu()
        pred_class = torch.where(pred.abs() < DIRECTION_DEADBAND, 0, pred.sign())
        agree += int((pred_class == target.sign()).sum())
        real += target.numel()
    metrics = {"val_loss": loss_sum / count, "direction_acc": agree / real}
    per_dim = abs_err / (real / len(action_names))
    metrics.update({f"mae_{name}": float(v) for name, v in zip(action_names, per_dim, strict=True)})
    return metrics


def save_checkpoint(
    directory: Path, policy: MobileVLAPolicy, trainer: Trainer, epoch: int, flat: dict
) -> None:
    """LoRA adapter (PEFT format) + head + optimizer/scheduler/scaler + RNG + position."""
    save_trainable(policy, directory)
    save_training_state(directory, trainer, epoch, flat)


def restore_checkpoint(directory: Path, policy: MobileVLAPolicy, trainer: Trainer) -> int:
    """Load a checkpoint into the built policy and trainer; returns epochs already done."""
    load_trainable(policy, directory)
    return load_training_state(directory, trainer)


def describe(
    plan: BatchPlan, trainer: Trainer, policy: MobileVLAPolicy, frames_cap: int, feature_cache: str
) -> dict:
    """Derived values worth logging beside the hyperparameters."""
    counts = parameter_counts(policy)
    return {
        "micro_batch_size": plan.micro_batch_size,
        "accumulation": plan.accumulation,
        "micro_batch_frames": frames_cap,
        "feature_cache": feature_cache,
        "steps_per_epoch": plan.steps_per_epoch,
        "warmup_steps": plan.warmup_steps,
        "precision": trainer.precision,
        "device": str(trainer.device),
        "trainable_params": counts["trainable"],
        "total_params": counts["total"],
    }


def train(
    config: dict[str, Any],
    report: Report,
    data: MobileVLAData | None = None,
    checkpoint_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Run the trial to max_epochs (or on from a checkpoint); returns the derived values."""
    cfg = parse_config(config)
    if cfg.run.torch_threads:
        torch.set_num_threads(cfg.run.torch_threads)

    # --- set-up: data, model, precision, optimizer, features, position
    torch.manual_seed(cfg.train.seed)
    if data is None:
        data = load_dataset(cfg.data)
    policy, tokenizer = build_policy(cfg.model, data.instructions)
    weights = weights_key(policy)  # of the fp32 weights, before any cast
    plan = plan_batches(cfg.train, len(data.train))
    frames_cap = frames_per_micro_batch(cfg.batching, plan, cfg.data.window_size)
    trainer = Trainer(policy, cfg.train, plan)
    policy.to(trainer.device)
    if trainer.precision != "fp32":
        cast_frozen(policy, torch.bfloat16 if trainer.precision == "bf16" else torch.float16)
    features, feature_cache = image_features_for(policy, data, cfg, trainer.precision, weights)
    batches = FrameBatches(data, tokenizer, trainer.device, cfg.batching.frame_dedup, features)
    val_batches = split_by_frames(
        np.arange(len(data.val)), data.val.frames, frames_cap, cfg.batching.frame_dedup
    )
    loss_fn = batch_loss(policy)
    start_epoch = restore_checkpoint(Path(checkpoint_dir), policy, trainer) if checkpoint_dir else 0
    derived = describe(plan, trainer, policy, frames_cap, feature_cache)

    # --- the loop: one epoch = one report
    for epoch in range(start_epoch, cfg.train.max_epochs):
        started = time.perf_counter()
        losses, norms, rows, micro = [], [], 0, 0
        for step in epoch_steps(
            data.train, cfg.batching, plan, cfg.train.batch_size, frames_cap, cfg.train.seed, epoch
        ):
            micro_batches = [batches(data.train, indices) for indices in step]
            loss, norm = trainer.step(micro_batches, loss_fn, count_targets)
            losses.append(loss)
            norms.append(norm)
            rows += sum(batch["rows"] for batch in micro_batches)
            micro += len(micro_batches)
        train_seconds = time.perf_counter() - started

        samples = plan.steps_per_epoch * cfg.train.batch_size
        metrics = trial_metrics(epoch, losses, norms, trainer, samples, train_seconds)
        # What frame sharing did: backbone frames per window, micro-batches per step.
        metrics["frame_passes_per_window"] = rows / samples
        metrics["micro_batches_per_step"] = micro / plan.steps_per_epoch
        if len(data.val):
            metrics |= evaluate(
                policy,
                batches,
                data.val,
                val_batches,
                trainer,
                data.action_names,
                data.action_bound,
            )
        metrics["peak_mem_mb"] = peak_memory_mb(trainer.device)
        metrics["derived"] = derived  # constant per trial: the tuner logs them as params
        with tempfile.TemporaryDirectory(prefix="vla-ckpt-") as tmp:
            save_checkpoint(Path(tmp), policy, trainer, epoch, config)
            report(metrics, tmp)
    return derived
