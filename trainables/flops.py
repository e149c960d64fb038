"""How busy a trial keeps its card: model FLOPs utilization (MFU), logged per epoch.

MFU = the FLOPs a step runs / its seconds / the card's dense bf16 peak. The FLOPs are
counted, not derived from parameter counts: torch's `FlopCounterMode` sees the matmuls,
convolutions and attention that actually run, forward and backward, so a frozen layer's
weight gradient (never computed) is not counted, and a checkpointed layer's recomputed
forward is. They are counted once per trial, on the first step's micro-batches, by a
forward and backward that changes nothing (`try_micro_batch`: no optimizer step,
gradients dropped, every RNG as it was), per unit of work (frames, tokens), so a step
of another size scales. Only on CUDA with a known peak; elsewhere no `mfu` metric.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from trainables.memory import excluded_from_peak, release_memory
from trainables.micro_batch import try_micro_batch
from trainables.training import Trainer

# Dense bf16 peaks in TFLOP/s, by a word of the card's name (datasheets; the sparse
# figures NVIDIA also prints are twice these). The first word found wins, so "A100"
# comes before "A10" and "H100"/"H200" before anything shorter.
PEAK_TFLOPS = (
    ("H200", 989.0),
    ("H100", 989.0),
    ("A100", 312.0),
    ("L40S", 362.0),
    ("A6000", 155.0),
    ("A5000", 111.0),
    ("A10", 125.0),
    ("L4", 121.0),
    ("4090", 165.0),
)


def card_peak_tflops(name: str, override: float | None = None) -> float | None:
    """The dense bf16 peak used for MFU: `override`, else looked up by the card's name;
    None for a card not in the table."""
    if override:
        return override
    for word, tflops in PEAK_TFLOPS:
        if word in name:
            return tflops
    return None


def device_peak_flops(device: torch.device) -> float | None:
    """The card's dense bf16 peak in FLOP/s; None on a CPU or an unknown card."""
    if device.type != "cuda":
        return None
    tflops = card_peak_tflops(torch.cuda.get_device_name(device))
    return tflops * 1e12 if tflops else None


def counted_flops(fn: Callable[[], Any]) -> float:
    """The FLOPs of one call of `fn`, as torch counts them (what runs: forward, and the
    backward's activation and weight gradients where they are computed)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def litgpt_flops(frozen_params: int, trainable_params: int, tokens: int) -> float:
    """A step's FLOPs by LitGPT's convention (`estimate_flops`): 2 FLOPs per parameter and
    token, times 2 for frozen parameters (forward, activation gradient) and 3 for trainable
    ones (forward, activation and weight gradients). Every parameter counts, embeddings
    too, and attention's own FLOPs are left out: a rough figure beside the counted one."""
    return 2.0 * tokens * (2 * frozen_params + 3 * trainable_params)


def utilization(flops: float, seconds: float, peak_flops: float) -> float:
    """MFU: achieved FLOP/s over the peak FLOP/s (a fraction, 0.35 = 35%)."""
    if seconds <= 0 or peak_flops <= 0:
        raise ValueError(f"seconds ({seconds}) and peak ({peak_flops}) must be > 0")
    return flops / seconds / peak_flops


class StepFlops:
    """A trial's MFU meter: counts one step's FLOPs per unit of work once, then turns
    an epoch's work and training seconds into its `mfu` metric."""

    def __init__(self, device: torch.device, peak_flops: float | None = None):
        self.device = device
        self.peak = peak_flops if peak_flops is not None else device_peak_flops(device)
        self.per_work: float | None = None  # FLOPs per unit of work, once counted
        self.tried = False

    def count_once(
        self, trainer: Trainer, micro_batches: Sequence, loss_fn: Callable, work: int
    ) -> float:
        """On the trial's first step (with a known peak): count the FLOPs of a forward and
        backward of its micro-batches that changes nothing. Returns the seconds it took (0
        otherwise), which the epoch's training time leaves out. Out of memory here (the
        step itself may need halving) gives up: that trial logs no MFU."""
        if self.peak is None or self.tried or work <= 0:
            return 0.0
        self.tried = True
        began = time.perf_counter()
        try:
            with excluded_from_peak(self.device):
                flops = counted_flops(
                    lambda: [try_micro_batch(trainer, b, loss_fn) for b in micro_batches]
                )
            self.per_work = flops / work
        except torch.cuda.OutOfMemoryError:
            release_memory(self.device)
        return time.perf_counter() - began

    def metrics(self, work: int, seconds: float) -> dict[str, float]:
        """{"mfu": ...} for an epoch of `work` units in `seconds`; {} when not counted."""
        if self.per_work is None or self.peak is None or seconds <= 0:
            return {}
        return {"mfu": utilization(self.per_work * work, seconds, self.peak)}
