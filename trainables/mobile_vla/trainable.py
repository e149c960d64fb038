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
from trainables.mobile_vla.modeling_mobile_vla import (
    MobileVLAPolicy,
    build_policy,
    cast_frozen,
    load_trainable,
    parameter_counts,
    save_trainable,
)
from trainables.mobile_vla.tokenizer import encode_instructions
from trainables.mobile_vla.trial_config import TrialConfig, parse_config
from trainables.mobile_vla.windows import Windows
from trainables.training import (
    BatchPlan,
    Trainer,
    epoch_order,
    load_training_state,
    peak_memory_mb,
    plan_batches,
    save_training_state,
    step_batches,
    trial_metrics,
)

Report = Callable[[dict[str, Any], str], None]
# A prediction within half a nominal command of zero counts as "no motion".
DIRECTION_DEADBAND = 0.5


class WindowBatches:
    """Turns window indices into model inputs; instructions are tokenized once."""

    def __init__(self, data: MobileVLAData, tokenizer, device: torch.device):
        self.data, self.device = data, device
        self.input_ids, self.attention_mask = encode_instructions(tokenizer, data.instructions)

    def __call__(self, windows: Windows, indices: np.ndarray) -> dict[str, torch.Tensor]:
        episodes = torch.from_numpy(windows.episode[indices])
        batch = {
            "pixels": torch.from_numpy(self.data.images[windows.frames[indices]]),
            "input_ids": self.input_ids[episodes],
            "attention_mask": self.attention_mask[episodes],
            "target": torch.from_numpy(windows.chunks[indices]),
            "mask": torch.from_numpy(windows.mask[indices]),
        }
        moved = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        # Counted on the host, so the loop never waits on the device for it.
        moved["count"] = int(windows.mask[indices].sum()) * windows.chunks.shape[-1]
        return moved


def count_targets(batch: dict) -> int:
    """Real (unmasked) target elements: what `action_loss` counts."""
    return batch["count"]


def batch_loss(policy: MobileVLAPolicy) -> Callable:
    def loss_fn(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        pred = policy(batch["pixels"], batch["input_ids"], batch["attention_mask"])
        return policy.compute_loss(pred, batch["target"], batch["mask"])

    return loss_fn


@torch.no_grad()
def evaluate(
    policy: MobileVLAPolicy,
    batches: WindowBatches,
    windows: Windows,
    micro_batch: int,
    trainer: Trainer,
    action_names: tuple[str, ...],
    bound: float,
) -> dict[str, float]:
    """val_loss, MAE per action dim in original units, and direction accuracy."""
    policy.eval()
    loss_sum, count = 0.0, 0
    abs_err = torch.zeros(len(action_names), dtype=torch.float64)
    agree, real = 0, 0
    for start in range(0, len(windows), micro_batch):
        batch = batches(windows, np.arange(start, min(start + micro_batch, len(windows))))
        with trainer.autocast():
            pred = policy(batch["pixels"], batch["input_ids"], batch["attention_mask"])
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


def describe(cfg: TrialConfig, plan: BatchPlan, trainer: Trainer, policy: MobileVLAPolicy) -> dict:
    """Derived values worth logging beside the hyperparameters."""
    counts = parameter_counts(policy)
    return {
        "micro_batch_size": plan.micro_batch_size,
        "accumulation": plan.accumulation,
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

    # --- set-up: data, model, precision, optimizer, position
    torch.manual_seed(cfg.train.seed)
    if data is None:
        data = load_dataset(cfg.data)
    policy, tokenizer = build_policy(cfg.model, data.instructions)
    plan = plan_batches(cfg.train, len(data.train))
    trainer = Trainer(policy, cfg.train, plan)
    policy.to(trainer.device)
    if trainer.precision != "fp32":
        cast_frozen(policy, torch.bfloat16 if trainer.precision == "bf16" else torch.float16)
    batches = WindowBatches(data, tokenizer, trainer.device)
    loss_fn = batch_loss(policy)
    start_epoch = restore_checkpoint(Path(checkpoint_dir), policy, trainer) if checkpoint_dir else 0
    derived = describe(cfg, plan, trainer, policy)

    # --- the loop: one epoch = one report
    for epoch in range(start_epoch, cfg.train.max_epochs):
        started = time.perf_counter()
        losses, norms = [], []
        for micro_indices in step_batches(
            epoch_order(len(data.train), cfg.train.seed, epoch), plan, cfg.train.batch_size
        ):
            micro_batches = [batches(data.train, idx) for idx in micro_indices]
            loss, norm = trainer.step(micro_batches, loss_fn, count_targets)
            losses.append(loss)
            norms.append(norm)
        train_seconds = time.perf_counter() - started

        samples = plan.steps_per_epoch * cfg.train.batch_size
        metrics = trial_metrics(epoch, losses, norms, trainer, samples, train_seconds)
        if len(data.val):
            metrics |= evaluate(
                policy,
                batches,
                data.val,
                plan.micro_batch_size,
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
