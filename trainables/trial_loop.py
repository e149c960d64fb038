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

from trainables.training import (
    Trainer,
    load_training_state,
    peak_memory_mb,
    save_training_state,
    trial_metrics,
)

Report = Callable[[dict[str, Any], str], None]


@dataclass
class RunOptions:
    """Keys about where a trial runs, not what it learns (every task has them)."""

    torch_threads: int = 0  # 0: torch's default; the tuner sets CPUs per trial


def apply_run_options(run: RunOptions) -> None:
    if run.torch_threads:
        torch.set_num_threads(run.torch_threads)


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

    def steps(self, epoch: int) -> Iterable[tuple[list[Any], int]]:
        """(micro-batches, work) for each optimizer step of `epoch`; work counts what
        `throughput` divides (frames, tokens)."""
        raise NotImplementedError

    def loss(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """(sum of the loss over the batch's real targets, their count)."""
        raise NotImplementedError

    def count_targets(self, batch: Any) -> int:
        raise NotImplementedError

    def throughput(self, work: int, samples: int, seconds: float) -> dict[str, float]:
        raise NotImplementedError

    def validate(self) -> dict[str, float]:
        """Validation metrics; {} when the data holds no validation samples."""
        raise NotImplementedError

    def save_weights(self, directory: Path) -> None:
        raise NotImplementedError

    def load_weights(self, directory: Path) -> None:
        raise NotImplementedError


def trial_function(trial_class: type[Trial]) -> Callable[..., dict[str, Any]]:
    """The task's `train(config, report, data=None, checkpoint_dir=None)`: parse, seed,
    load the data (unless the tuner shares one copy), build the trial, run its epochs."""

    def train(
        config: dict[str, Any],
        report: Report,
        data: Any = None,
        checkpoint_dir: str | Path | None = None,
    ) -> dict[str, Any]:
        cfg = trial_class.parse_config(config)
        apply_run_options(cfg.run)
        torch.manual_seed(cfg.train.seed)
        if data is None:
            data = trial_class.load_dataset(cfg.data)
        return run_epochs(trial_class(cfg, data), config, report, checkpoint_dir)

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


def run_epochs(
    trial: Trial,
    flat: dict[str, Any],
    report: Report,
    checkpoint_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Train to max_epochs (or on from a checkpoint); returns the derived values."""
    start_epoch = restore_checkpoint(Path(checkpoint_dir), trial) if checkpoint_dir else 0
    trainer = trial.trainer
    for epoch in range(start_epoch, trainer.cfg.max_epochs):
        started = time.perf_counter()
        losses, norms, work, micro = [], [], 0, 0
        for micro_batches, step_work in trial.steps(epoch):
            loss, norm = trainer.step(micro_batches, trial.loss, trial.count_targets)
            losses.append(loss)
            norms.append(norm)
            work += step_work
            micro += len(micro_batches)
        train_seconds = time.perf_counter() - started

        samples = trainer.plan.steps_per_epoch * trainer.cfg.batch_size
        metrics = trial_metrics(epoch, losses, norms, trainer, samples, train_seconds)
        metrics["micro_batches_per_step"] = micro / trainer.plan.steps_per_epoch
        metrics |= trial.throughput(work, samples, train_seconds)
        metrics |= trial.validate()
        metrics["peak_mem_mb"] = peak_memory_mb(trainer.device)
        metrics["derived"] = trial.derived
        with tempfile.TemporaryDirectory(prefix=trial.checkpoint_prefix) as tmp:
            save_checkpoint(Path(tmp), trial, epoch, flat)
            report(metrics, tmp)
    return trial.derived
