"""The per-epoch trial loop every task shares: train, validate, report, checkpoint, resume.

A task builds its parts (model, trainer, batches, loss, validation, how to save its
weights) as a `Trial`; `run_epochs` runs it. One epoch is one report, and each
report carries the checkpoint a retried or resumed trial restarts from.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from trainables.flops import StepFlops
from trainables.memory import TrialMemory
from trainables.micro_batch import set_memory_share
from trainables.training import Trainer, resolve_device, trial_metrics
from trainables.training_state import load_training_state, save_training_state

Report = Callable[[dict[str, Any], str], None]


@dataclass
class RunOptions:
    """Keys about where a trial runs, not what it learns (every task has them)."""

    torch_threads: int = 0  # 0: torch's default; the tuner sets CPUs per trial
    gpu_share: float = 1.0  # of the card's memory; the tuner sets a fractional GPU per trial

    def __post_init__(self) -> None:
        if not 0 < self.gpu_share <= 1:
            raise ValueError(f"gpu_share: must be in (0, 1], got {self.gpu_share}")


def apply_run_options(run: RunOptions, device_name: str) -> None:
    """Threads, and the share of the card (a limit only CUDA has)."""
    if run.torch_threads:
        torch.set_num_threads(run.torch_threads)
    set_memory_share(resolve_device(device_name), run.gpu_share)


class Trial:
    """One trial's parts, built by a task's subclass; everything else is shared.

    A subclass names how its config is parsed and its data loaded, builds `trainer`
    (which holds the model, the train config and the batch plan) and `derived` in
    `__init__(cfg, data)`, and says what is its own: batches, loss, throughput,
    validation and how its trainable weights are saved.
    """

    parse_config: Callable[[dict[str, Any]], Any]  # flat dict -> parsed config
    load_dataset: Callable[[Any], Any]  # the parsed config's `data` part -> data
    trainer: Trainer
    derived: dict[str, Any]  # constant per trial: the tuner logs them as params
    checkpoint_prefix = "ckpt-"
    unit = "sample"  # what one row of the data is (a window, a sequence): for messages

    def steps(self, epoch: int) -> Iterable[tuple[list[Any], int]]:
        """(micro-batches, work) for each optimizer step of `epoch`; work counts what
        `throughput` divides (frames, tokens)."""
        raise NotImplementedError

    def loss(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """(sum of the loss over the batch's real targets, their count)."""
        raise NotImplementedError

    def count_targets(self, batch: Any) -> int:
        raise NotImplementedError

    def split(self, batch: Any) -> list[Any]:
        """Two halves of a micro-batch that ran out of memory; [batch] when it holds one
        sample (then the trial fails with what it needed)."""
        return [batch]

    def throughput(self, work: int, samples: int, seconds: float) -> dict[str, float]:
        raise NotImplementedError

    def validate(self) -> dict[str, float]:
        """Validation metrics; {} when the data holds no validation samples."""
        raise NotImplementedError

    def save_weights(self, directory: Path) -> None:
        raise NotImplementedError

    def load_weights(self, directory: Path) -> None:
        raise NotImplementedError


def derived_values(trainer: Trainer, counts: dict[str, int], checkpointed: int) -> dict[str, Any]:
    """The derived values every task logs beside its hyperparameters (a task adds how it
    splits its batch, in the terms its batching really uses): schedule, precision, device,
    parameter `counts` (trainable, total) and `checkpointed` layers."""
    return {
        "steps_per_epoch": trainer.plan.steps_per_epoch,
        "warmup_steps": trainer.plan.warmup_steps,
        "precision": trainer.precision,
        "device": str(trainer.device),
        "trainable_params": counts["trainable"],
        "total_params": counts["total"],
        "checkpointed_layers": checkpointed,
    }


def trial_function(trial_class: type[Trial]) -> Callable[..., dict[str, Any]]:
    """The task's `train(config, report, data=None, checkpoint_dir=None)`: parse, seed,
    load the data (unless the tuner shares one copy), build the trial, run its epochs.

    Everything the trial built lives in `build_and_run`'s frame, so it is unreferenced
    once that returns (or fails); `TrialMemory` then gives the memory back before the
    next trial in a reused Ray worker builds, and measures this trial's own peak."""

    def train(
        config: dict[str, Any],
        report: Report,
        data: Any = None,
        checkpoint_dir: str | Path | None = None,
    ) -> dict[str, Any]:
        cfg = trial_class.parse_config(config)
        apply_run_options(cfg.run, cfg.train.device)
        torch.manual_seed(cfg.train.seed)
        with TrialMemory(resolve_device(cfg.train.device)) as memory:
            return build_and_run(cfg, config, report, data, checkpoint_dir, memory)

    def build_and_run(
        cfg: Any,
        config: dict[str, Any],
        report: Report,
        data: Any,
        checkpoint_dir: str | Path | None,
        memory: TrialMemory,
    ) -> dict[str, Any]:
        if data is None:
            data = trial_class.load_dataset(cfg.data)
        trial = trial_class(cfg, data)
        return run_epochs(trial, config, report, checkpoint_dir, memory=memory)

    train.__doc__ = f"Run one {trial_class.__name__} to max_epochs (or on from a checkpoint)."
    train.trial_class = trial_class  # what trainables.calibrate measures
    return train


def save_checkpoint(directory: Path, trial: Trial, epoch: int, flat: dict) -> None:
    """The task's trainable weights + optimizer/scheduler/scaler + RNG + position."""
    trial.save_weights(directory)
    save_training_state(directory, trial.trainer, epoch, flat)


def restore_checkpoint(directory: Path, trial: Trial) -> int:
    """Load a checkpoint into the built model and trainer; returns epochs already done."""
    trial.load_weights(directory)
    return load_training_state(directory, trial.trainer)


def epoch_report(
    trial: Trial,
    epoch: int,
    losses: list[float],
    norms: list[float],
    work: int,
    micro: int,
    train_seconds: float,
    memory: TrialMemory,
) -> dict[str, Any]:
    """An epoch's metrics once it trained (`micro`: micro-batches it ran): training
    figures, throughput, validation, peak memory, derived values. Shared with packs."""
    trainer = trial.trainer
    samples = trainer.plan.steps_per_epoch * trainer.cfg.batch_size
    metrics = trial_metrics(epoch, losses, norms, trainer, samples, train_seconds)
    metrics["micro_batches_per_step"] = micro / trainer.plan.steps_per_epoch
    metrics |= trial.throughput(work, samples, train_seconds)
    metrics |= trial.validate()
    metrics["peak_mem_mb"] = memory.peak_mb()
    metrics["derived"] = trial.derived
    return metrics


def run_epochs(
    trial: Trial,
    flat: dict[str, Any],
    report: Report,
    checkpoint_dir: str | Path | None = None,
    *,
    memory: TrialMemory,
) -> dict[str, Any]:
    """Train to max_epochs (or on from a checkpoint); returns the derived values.
    `memory` measures since the trial's start: its peak is the trial's `peak_mem_mb`."""
    start_epoch = restore_checkpoint(Path(checkpoint_dir), trial) if checkpoint_dir else 0
    trainer = trial.trainer
    flops = StepFlops(trainer.device)  # MFU on CUDA; its one counting pass is not timed
    for epoch in range(start_epoch, trainer.cfg.max_epochs):
        started = time.perf_counter()
        losses, norms, work, micro = [], [], 0, 0
        for micro_batches, step_work in trial.steps(epoch):
            started += flops.count_once(trainer, micro_batches, trial.loss, step_work)
            loss, norm = trainer.step(
                micro_batches, trial.loss, trial.count_targets, trial.split, trial.unit
            )
            losses.append(loss)
            norms.append(norm)
            work += step_work
            micro += len(micro_batches)
        train_seconds = time.perf_counter() - started
        metrics = epoch_report(trial, epoch, losses, norms, work, micro, train_seconds, memory)
        metrics |= flops.metrics(work, train_seconds)
        with tempfile.TemporaryDirectory(prefix=trial.checkpoint_prefix) as tmp:
            save_checkpoint(Path(tmp), trial, epoch, flat)
            report(metrics, tmp)
    return trial.derived
