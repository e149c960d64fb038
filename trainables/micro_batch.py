"""Choosing and splitting micro-batches to fit device memory.

The micro-batch is a resource choice: gradients accumulate to the same global batch
whatever its size, so a trial may pick the largest one that fits its share of the card
(`largest_fitting`, before the first epoch) and redo one that runs out of memory later
as two halves (`Trainer.step`, whose later steps then start from halves). Only one sample
that does not fit fails the trial, with `trainables.errors.out_of_memory` naming what it
needed and what lowers it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch

from trainables.errors import out_of_memory
from trainables.memory import excluded_from_peak, release_memory
from trainables.training import Trainer

# A test hook (like Ray's RAY_testing_* variables), never set in a real run: with it set
# to N, a micro-batch forward of more than N rows raises CUDA's out-of-memory error on
# any device, and the probe runs on CPU too. How the OOM path is tested without a GPU.
OOM_TEST_ENV = "VLA_TUNE_TEST_OOM_ABOVE"


def oom_test_limit() -> int | None:
    """The rows above which the test hook raises, or None when it is not set."""
    value = os.environ.get(OOM_TEST_ENV, "")
    return int(value) if value else None


def simulate_oom(rows: int) -> None:
    """Raise CUDA's out-of-memory error for a forward of `rows` rows when the test hook
    says so; a no-op in a real run. Tasks call it at the start of their training loss."""
    limit = oom_test_limit()
    if limit is not None and rows > limit:
        raise torch.cuda.OutOfMemoryError(
            f"CUDA out of memory (test hook {OOM_TEST_ENV}={limit}): {rows} rows"
        )


def probe_wanted(device: torch.device) -> bool:
    """Whether an automatic micro-batch is measured: on CUDA, or on any device with the
    test hook set. On CPU otherwise the fixed rule of `plan_batches` stays."""
    return device.type == "cuda" or oom_test_limit() is not None


def set_memory_share(device: torch.device, share: float) -> None:
    """Limit this process to `share` of the card, so trials sharing one cannot starve
    each other (CUDA raises out-of-memory at the limit, which the probe then sees)."""
    if device.type == "cuda":  # 1.0 too: a reused worker drops an earlier trial's limit
        torch.cuda.set_per_process_memory_fraction(share, device)  # indexed: resolve_device


def try_micro_batch(trainer: Trainer, batch: Any, loss_fn: Callable) -> None:
    """One try of the probe: forward and backward of a micro-batch, then forgotten (no
    optimizer step, gradients dropped, every RNG as it was: the probe changes no result)."""
    trainer.model.train()
    devices = [trainer.device] if trainer.device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            with trainer.autocast():
                batch_sum, _ = loss_fn(batch)
            batch_sum.float().backward()
    finally:
        trainer.optimizer.zero_grad(set_to_none=True)


def largest_fitting(
    try_size: Callable[[int], None],
    largest: int,
    smallest: int,
    what: str,
    device: torch.device,
) -> int:
    """The largest of largest, largest // 2, ... (never below `smallest`) for which
    `try_size` (a forward and backward of a worst-case micro-batch of that size) does not
    run out of memory. Raises `out_of_memory(what, ...)` when `smallest` does not fit."""
    size = max(largest, smallest)
    with excluded_from_peak(device):
        while True:
            try:
                try_size(size)
                return size
            except torch.cuda.OutOfMemoryError as exc:
                message = str(exc)
            release_memory(device)
            if size <= smallest:
                raise out_of_memory(what, message, device)
            size = max(smallest, size // 2)


def choice_line(key: str, chosen: int, largest: int) -> str:
    """The line a trial prints when it measured its micro-batch."""
    how = "a whole step fits" if chosen >= largest else f"{largest} did not fit"
    return f"{key}: {chosen} (measured on this device: {how})"
