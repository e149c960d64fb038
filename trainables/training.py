"""The mixed-precision training loop every task shares.

A task supplies its model, its micro-batches and two functions: `loss_fn(batch)` returning
(sum of per-element losses over real targets, number of real targets) and
`count_fn(batch)` returning that number without a forward pass. With both, one optimizer
step averages the loss over the real targets of the whole effective batch, so splitting
`batch_size` into micro-batches changes nothing beyond float noise.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from trainables.errors import TrainingError, out_of_memory
from trainables.memory import release_memory

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
SCHEDULES = ("constant", "cosine")


@dataclass
class TrainConfig:
    learning_rate: float = 1e-4
    weight_decay: float = 0.0
    batch_size: int = 128  # global (effective) batch: micro_batch_size x accumulation
    micro_batch_size: int = 0  # a resource choice, not a hyperparameter; 0 = automatic
    max_micro_batch_size: int = 32  # cap for the automatic choice
    warmup_ratio: float = 0.25  # warmup length in epochs
    lr_schedule: str = "constant"  # after warmup: constant or cosine
    min_lr_scale: float = 0.1  # cosine ends at min_lr_scale x learning_rate
    max_epochs: int = 5
    grad_clip: float = 1.0  # max global grad norm; 0 disables
    precision: str = "auto"
    device: str = "auto"
    seed: int = 0

    def __post_init__(self) -> None:
        positive = ("learning_rate", "batch_size", "max_epochs", "max_micro_batch_size")
        for key in positive:
            if not getattr(self, key) > 0:
                raise ValueError(f"{key} must be > 0, got {getattr(self, key)}")
        for key in ("weight_decay", "warmup_ratio", "grad_clip", "micro_batch_size"):
            if getattr(self, key) < 0:
                raise ValueError(f"{key} must be >= 0, got {getattr(self, key)}")
        if not 0 <= self.min_lr_scale <= 1:
            raise ValueError(f"min_lr_scale must be in [0, 1], got {self.min_lr_scale}")
        if self.lr_schedule not in SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {SCHEDULES}, got {self.lr_schedule!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")


@dataclass(frozen=True)
class BatchPlan:
    micro_batch_size: int
    accumulation: int
    steps_per_epoch: int
    warmup_steps: int
    total_steps: int


def plan_batches(cfg: TrainConfig, num_train: int) -> BatchPlan:
    """Micro-batch, accumulation and step counts; refuses plans that cannot train."""
    if cfg.micro_batch_size:
        micro = cfg.micro_batch_size
        if cfg.batch_size % micro:
            raise TrainingError(
                f"batch_size {cfg.batch_size} is not a multiple of micro_batch_size {micro}"
            )
    else:
        micro = largest_divisor(cfg.batch_size, cfg.max_micro_batch_size)
    steps = num_train // cfg.batch_size
    if steps == 0:
        raise TrainingError(
            f"batch_size {cfg.batch_size} exceeds the {num_train} training samples: "
            "zero optimizer steps per epoch"
        )
    return BatchPlan(
        micro_batch_size=micro,
        accumulation=cfg.batch_size // micro,
        steps_per_epoch=steps,
        warmup_steps=int(cfg.warmup_ratio * steps + 0.5),  # half up, not to even
        total_steps=steps * cfg.max_epochs,
    )


def largest_divisor(batch_size: int, cap: int) -> int:
    """The largest micro-batch <= cap that divides batch_size (equal micro-batches)."""
    return max(d for d in range(1, min(batch_size, max(1, cap)) + 1) if batch_size % d == 0)


def with_micro_batch(plan: BatchPlan, micro: int, batch_size: int) -> BatchPlan:
    """The plan with another micro-batch (a measured one): the schedule is unchanged."""
    return dataclasses.replace(plan, micro_batch_size=micro, accumulation=batch_size // micro)


def lr_scale(step: int, plan: BatchPlan, cfg: TrainConfig) -> float:
    """Linear warmup over warmup_ratio epochs, then constant or cosine to min_lr_scale."""
    if step < plan.warmup_steps:
        return (step + 1) / (plan.warmup_steps + 1)
    if cfg.lr_schedule == "constant":
        return 1.0
    progress = (step - plan.warmup_steps) / max(1, plan.total_steps - plan.warmup_steps)
    return cfg.min_lr_scale + (1 - cfg.min_lr_scale) * 0.5 * (1 + math.cos(math.pi * progress))


def resolve_device(name: str) -> torch.device:
    """The device a trial runs on, a GPU always with its index: torch's per-process memory
    share refuses a bare "cuda" (measured on CUDA: "a specified index")."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def resolve_precision(requested: str, device: torch.device) -> str:
    """auto: bf16 on CUDA with bf16, fp16 (+ GradScaler) on older CUDA, fp32 on CPU.

    CPU bf16 stays available on request, but is ~100x slower than fp32 on a plain CPU.
    """
    if requested != "auto":
        if requested == "fp16" and device.type != "cuda":
            raise TrainingError("precision fp16 needs a CUDA device (GradScaler); use bf16")
        return requested
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


def autocast(device: torch.device, precision: str) -> AbstractContextManager:
    if precision == "fp32":
        return nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def upcast_trainable(model: torch.nn.Module) -> None:
    """fp32 master weights for everything that trains, whatever the frozen base's dtype:
    in bf16/fp16 the optimizer's small updates would vanish (and fp16 gradients overflow)."""
    for param in model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only: biases, norms and gains are not decayed."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (decay if param.ndim >= 2 else no_decay).append(param)
    if not decay and not no_decay:
        raise TrainingError(
            "nothing to train: no parameter requires grad (check lora_enable, freeze_backbone)"
        )
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.learning_rate)


def epoch_order(num_train: int, seed: int, epoch: int) -> np.ndarray:
    """Shuffled window order of one epoch, a pure function of (seed, epoch) for resuming."""
    return np.random.default_rng([seed, epoch]).permutation(num_train)


def step_batches(order: np.ndarray, plan: BatchPlan, batch_size: int) -> Iterator[list[np.ndarray]]:
    """Per optimizer step, the index arrays of its micro-batches (the last partial batch
    of the epoch is dropped, so every step sees exactly batch_size windows)."""
    for step in range(plan.steps_per_epoch):
        indices = order[step * batch_size : (step + 1) * batch_size]
        yield np.split(indices, plan.accumulation)


def halved(batches: list, split: Callable[[Any], list] | None, times: int) -> list:
    """Each batch halved `times` times by `split` (a piece of one unit stays whole)."""
    for _ in range(times if split is not None else 0):
        batches = [part for batch in batches for part in split(batch)]
    return batches


class Trainer:
    """Optimizer, schedule, precision and the guards; one `step` = one optimizer step."""

    def __init__(self, model: torch.nn.Module, cfg: TrainConfig, plan: BatchPlan):
        self.model, self.cfg, self.plan = model, cfg, plan
        self.device = resolve_device(cfg.device)
        self.precision = resolve_precision(cfg.precision, self.device)
        upcast_trainable(model)
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = build_optimizer(model, cfg)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_scale(step, plan, cfg)
        )
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        self.global_step = 0
        self.skipped_steps = 0  # fp16 steps the GradScaler skipped (inf/NaN gradients)
        self.oom_splits = 0  # micro-batches redone as halves after running out of memory
        self.halvings = 0  # how often a step's micro-batches are halved before they run

    def autocast(self) -> AbstractContextManager:
        return autocast(self.device, self.precision)

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def step(
        self,
        micro_batches: Sequence,
        loss_fn: Callable[[object], tuple[torch.Tensor, torch.Tensor]],
        count_fn: Callable[[object], int],
        split: Callable[[Any], list] | None = None,
        unit: str = "sample",
    ) -> tuple[float, float]:
        """Accumulate over the micro-batches, clip, step. Returns (mean loss, grad norm).

        When a micro-batch runs out of memory, the step starts again with it replaced by
        the halves `split(batch)` gives (down to one `unit`): no partial gradient is kept,
        and the loss is divided by the whole step's target count either way, so the step
        does not change beyond float noise. Nothing is copied unless memory runs out; once
        it has, later steps halve their micro-batches as often before they run, instead of
        running out again."""
        self.model.train()
        total = sum(count_fn(batch) for batch in micro_batches)
        if total == 0:
            raise TrainingError("an optimizer step has no real (unmasked) targets")
        pending = halved(list(micro_batches), split, self.halvings)
        depths = [self.halvings] * len(pending)
        while not isinstance(done := self._accumulate(pending, loss_fn, total), torch.Tensor):
            index, message = done
            release_memory(self.device)
            halves = split(pending[index]) if split is not None else []
            if len(halves) < 2:
                raise out_of_memory(f"one {unit}", message, self.device)
            self.oom_splits += 1
            if self.oom_splits == 1:  # later ones are counted in the `oom_splits` metric
                print(
                    f"out of memory: a micro-batch redone as {len(halves)} parts "
                    "(later steps start from that size)",
                    flush=True,
                )
            pending[index : index + 1] = halves
            depths[index : index + 1] = [depths[index] + 1] * len(halves)
        self.halvings = max(depths)  # a step has micro-batches (its total is not 0)
        return self.finish_step(done.item(), total)

    def finish_step(self, loss_sum: float, total: int) -> tuple[float, float]:
        """Unscale, clip, step optimizer and schedule once every micro-batch of the step
        has added its `scaled_loss(...).backward()` to `.grad` (a pack of trials calls
        it when a member's own global batch is complete). Returns (mean loss, grad norm)."""
        self.scaler.unscale_(self.optimizer)  # before clipping: the norm of true gradients
        if self.global_step == 0:
            self._check_first_step(loss_sum)
        max_norm = self.cfg.grad_clip if self.cfg.grad_clip > 0 else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, max_norm)
        scale = self.scaler.get_scale()
        self.scaler.step(self.optimizer)  # skipped by the scaler on inf/NaN gradients
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler.get_scale() < scale:  # the scaler backs off only after a skip
            self.skipped_steps += 1  # no update happened: schedule and count stay put
        else:
            self.scheduler.step()
            self.global_step += 1
        return loss_sum / total, float(grad_norm)

    def scaled_loss(self, batch_sum: torch.Tensor, total: int) -> torch.Tensor:
        """A micro-batch's share of the step's mean loss, as the GradScaler wants it."""
        return self.scaler.scale(batch_sum.float() / total)

    def _accumulate(
        self, micro_batches: list, loss_fn: Callable, total: int
    ) -> torch.Tensor | tuple[int, str]:
        """Backward of every micro-batch into `.grad`: their loss sum (on the device, no
        host sync per micro-batch), or (index, message) of the one that ran out of memory,
        with every gradient of the try dropped."""
        loss_sum = torch.zeros((), device=self.device)
        for index, batch in enumerate(micro_batches):
            try:
                with self.autocast():
                    batch_sum, _ = loss_fn(batch)
                self.scaled_loss(batch_sum, total).backward()
            except torch.cuda.OutOfMemoryError as exc:
                failed = (index, str(exc))  # out of the except: its traceback holds tensors
                break
            loss_sum += batch_sum.detach().float()
        else:
            return loss_sum
        self.optimizer.zero_grad(set_to_none=True)
        return failed

    def _check_first_step(self, loss_sum: float) -> None:
        """A loss of exactly 0 or gradients that never arrive are bugs, not results."""
        if loss_sum == 0.0:
            raise TrainingError("loss is exactly 0 on the first step: targets or mask are wrong")
        missing = [
            n for n, p in self.model.named_parameters() if p.requires_grad and p.grad is None
        ]
        if missing:
            raise TrainingError(
                f"no gradient reaches {len(missing)} trainable parameters "
                f"(e.g. {', '.join(missing[:3])}): they are not part of the loss"
            )
        if all(not torch.any(p.grad) for p in self.params):
            raise TrainingError("every gradient is zero on the first step: nothing can learn")

    def state_dict(self) -> dict:
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "global_step": self.global_step,
            "skipped_steps": self.skipped_steps,
            "oom_splits": self.oom_splits,
        }

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.global_step = state["global_step"]
        self.skipped_steps = state.get("skipped_steps", 0)
        self.oom_splits = state.get("oom_splits", 0)


def trial_metrics(
    epoch: int, losses: list, norms: list, trainer: Trainer, samples: int, seconds: float
) -> dict[str, Any]:
    """The training half of an epoch's report, the same for every task."""
    return {
        "epoch": epoch + 1,
        "train_loss": float(np.mean(losses)),
        "grad_norm": float(np.mean(norms)),
        "lr": trainer.lr,
        "samples_per_s": samples / seconds,
        "train_seconds": seconds,
        "skipped_steps": trainer.skipped_steps,
        "oom_splits": trainer.oom_splits,
    }
