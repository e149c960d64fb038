"""What a trial fails with when it cannot give a meaningful result.

Below both the training loop and the micro-batch probe, which each raise `out_of_memory`
when one sample does not fit: the dependency then goes one way (micro_batch -> training
-> errors) instead of round in a circle.
"""

from __future__ import annotations

import re

import torch

LOWER_MEMORY = (
    "lower it with gradient_checkpointing: true, precision: bf16 or fp16, "
    "or a larger share of the card (--gpus-per-trial)"
)


class TrainingError(RuntimeError):
    """A training set-up or run that cannot give a meaningful result."""


def out_of_memory(what: str, message: str, device: torch.device) -> TrainingError:
    """The one line a trial fails with when `what` (one window, one sequence) does not
    fit: the memory it needed, from the error and the device's statistics."""
    needed = re.search(r"Tried to allocate ([\d.]+ [KMGT]?i?B)", message)
    if needed:
        detail = f"it needed {needed.group(1)} more"
        if device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(device) / 2**30
            detail += f" on top of a peak of {peak:.2f} GiB"
    else:
        detail = message.strip().splitlines()[0] if message.strip() else "out of memory"
    return TrainingError(f"{what} does not fit in device memory ({detail}): {LOWER_MEMORY}")
