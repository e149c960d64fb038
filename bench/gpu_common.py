"""What bench/gpu.py's parts share: memory budgets, timed steps (the card's peak and
counted FLOPs are trainables.flops', re-exported here).

Imports only torch (and the project's trainables): the GPU box has no ray, mlflow,
optuna or psutil.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from common import release_memory, synchronize

from trainables.flops import card_peak_tflops as card_peak  # noqa: F401 (bench/gpu.py's)
from trainables.flops import counted_flops  # noqa: F401 (one home: trainables.flops)
from trainables.memory import TrialMemory, resident_bytes

GIB = 2**30
GB = 10**9


def outside_allocator_bytes(device: torch.device) -> int:
    """What the process holds on the card besides PyTorch's allocator (CUDA context,
    cuBLAS workspaces): measured, so a budget of "a 24 GB card" subtracts it."""
    free, total = torch.cuda.mem_get_info(device)
    return max(0, total - free - torch.cuda.memory_reserved(device))


@contextmanager
def memory_budget(device: torch.device, budget_bytes: float):
    """Cap this process's allocator at `budget_bytes` of the card (less what lives outside
    the allocator), as a card of that size would; the whole card again afterwards."""
    total = torch.cuda.get_device_properties(device).total_memory
    usable = budget_bytes - outside_allocator_bytes(device)
    torch.cuda.set_per_process_memory_fraction(max(0.0, min(1.0, usable / total)), device)
    try:
        yield usable
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, device)
        release_memory(device)


@dataclass
class Timing:
    """Step times and the peak memory of a set of timed steps."""

    seconds: list[float] = field(default_factory=list)
    peak_mb: float | None = None

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def timed_steps(
    device: torch.device, steps: Sequence[Callable[[], None]], warmup: int = 1
) -> Timing:
    """Run `warmup` untimed steps, then time each of the rest (synchronized). Memory as a
    trial measures its own: CUDA's allocated peak; on a CPU the growth of the resident size
    over the timed steps (sampled), since weights and data sit in it from before."""
    for step in steps[:warmup]:
        step()
    release_memory(device)
    timing = Timing()
    start = resident_bytes() or 0
    with TrialMemory(device) as memory:
        for step in steps[warmup:]:
            synchronize(device)
            begin = time.perf_counter()
            step()
            synchronize(device)
            timing.seconds.append(time.perf_counter() - begin)
        timing.peak_mb = memory.peak_mb() - (start / 2**20 if device.type == "cpu" else 0)
    return timing
