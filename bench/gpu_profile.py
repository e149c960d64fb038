"""Where a cached bf16 step's time goes, and how busy the grid's batches keep the card.

bench/gpu.py's parts `profile` and `batches` on one loaded policy (gpu_kosmos.Loaded):
  - profile: one step of the cached-feature path (one micro-batch of `windows`) under
    torch.profiler: the share of the step the GPU is busy (the union of its kernels and
    copies over the wall time), kernels per step, the ten largest kernels, host-device
    syncs per step (CUDA's synchronize calls; and the scalar reads, `.item()` and the like,
    that cause them, counted on any device), and the same step at twice the windows (time
    ratio: ~2 compute-bound, ~1 overhead-bound);
  - batches: the grid's global batches (128, 256, 512 windows) as one micro-batch where it
    fits, with gradient checkpointing where it does not;
each with MFU counted by torch's FlopCounterMode and by LitGPT's convention
(trainables.flops.litgpt_flops), labelled, over the card's dense bf16 peak.
"""

from __future__ import annotations

import time
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from common import release_memory, synchronize
from gpu_common import counted_flops, timed_steps
from gpu_kosmos import DTYPES, Loaded, count, loss_of, makers, set_gradient_checkpointing
from gpu_kosmos import trainer_for as kosmos_trainer
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

from trainables.flops import litgpt_flops, utilization
from trainables.mobile_vla.backbone import cast_frozen

SYNC_CALLS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize")
SCALAR_READS = ("aten::_local_scalar_dense", "aten::nonzero")  # each waits for the device


@dataclass
class CachedStep:
    """A cached-path optimizer step of `windows` windows as one micro-batch."""

    run: Loaded
    windows: int
    precision: str = "bf16"
    frames: int = 0  # distinct backbone frames of the first step
    tokens: int = 0  # text tokens the text model runs in it
    steps: list[Callable[[], None]] = field(default_factory=list)

    def build(self, count_steps: int) -> CachedStep:
        run = self.run
        cast_frozen(run.policy, DTYPES.get(self.precision, torch.float32))
        trainer = kosmos_trainer(run, self.precision, self.windows)
        cached = makers(run, self.precision)["cached"]
        loss_fn, order = loss_of(run.policy), run.order(self.windows * count_steps)
        chunks = [order[i * self.windows : (i + 1) * self.windows] for i in range(count_steps)]
        first = cached(run.data.train, chunks[0])
        self.frames = first["rows"]
        width = first["input_ids"].shape[1] + run.policy.num_image_tokens + 1
        self.tokens = self.frames * width

        def step(chunk: np.ndarray) -> None:
            trainer.step([cached(run.data.train, chunk)], loss_fn, count)

        self.steps = [lambda c=c: step(c) for c in chunks]
        return self

    def litgpt(self) -> float:
        """LitGPT's FLOPs of the step: the text model's frozen parameters (the only tower
        the cached path runs) and every trainable one, over the step's tokens."""
        policy = self.run.policy
        frozen = sum(
            p.numel() for p in policy.kosmos.text_model.parameters() if not p.requires_grad
        )
        trainable = sum(p.numel() for p in policy.parameters() if p.requires_grad)
        return litgpt_flops(frozen, trainable, self.tokens)


def mfus(flops_counted: float, flops_litgpt: float, step_s: float, peak: float | None) -> dict:
    both = {"tflop_counted": flops_counted / 1e12, "tflop_litgpt": flops_litgpt / 1e12}
    if peak:
        both["mfu_counted"] = utilization(flops_counted, step_s, peak * 1e12)
        both["mfu_litgpt"] = utilization(flops_litgpt, step_s, peak * 1e12)
    return both


def union_us(intervals: list[tuple[float, float]]) -> float:
    """The length of the union of [start, end) intervals: time the GPU was busy."""
    busy, reach = 0.0, -np.inf
    for start, end in sorted(intervals):
        if end > reach:
            busy += end - max(start, reach)
            reach = end
    return busy


def profile_steps(device: torch.device, steps: list[Callable[[], None]]) -> dict:
    """Run `steps` under torch.profiler; per step: kernels, syncs, busy share, top kernels."""
    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    synchronize(device)
    with profile(activities=activities) as prof:
        began = time.perf_counter()
        for step in steps:
            step()
        synchronize(device)
        wall_us = (time.perf_counter() - began) * 1e6
    events = prof.events()
    on_device = [e for e in events if e.device_type == DeviceType.CUDA]
    kernels = [e for e in on_device if not e.name.startswith(("Memcpy", "Memset"))]
    per_name: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    for e in kernels:
        per_name[e.name][0] += e.time_range.elapsed_us()
        per_name[e.name][1] += 1
    busy = union_us([(e.time_range.start, e.time_range.end) for e in on_device])
    total = sum(t for t, _ in per_name.values()) or 1.0
    top = sorted(per_name.items(), key=lambda kv: -kv[1][0])[:10]
    n = len(steps)
    return {
        "steps": n,
        "wall_ms_per_step": wall_us / 1e3 / n,
        "gpu_busy_share": busy / wall_us if device.type == "cuda" else None,
        "kernels_per_step": len(kernels) / n,
        "syncs_per_step": sum(e.name in SYNC_CALLS for e in events) / n,
        "scalar_reads_per_step": sum(e.name in SCALAR_READS for e in events) / n,
        "top_kernels": [
            {"name": name[:120], "ms_per_step": t / 1e3 / n, "calls_per_step": c / n,
             "share_of_kernel_time": t / total}
            for name, (t, c) in top
        ],
    }  # fmt: skip


def sync_sites(device: torch.device, step: Callable[[], None]) -> dict[str, int] | None:
    """Where one step synchronizes with the card: CUDA's sync debug mode warns at every
    synchronizing call, attributed to the Python line that made it. None off CUDA."""
    if device.type != "cuda":
        return None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    sites = Counter(
        f"{Path(w.filename).name}:{w.lineno}" for w in caught if "synchroniz" in str(w.message)
    )
    return dict(sites.most_common(12))


def adamw_ms(run: Loaded, repeats: int = 10) -> dict[str, float]:
    """One AdamW step over copies of the trial's trainable parameters (random gradients),
    foreach (the default on CUDA) against fused: what fusing could save per step."""
    device = run.device
    times = {}
    for fused in (False, True):
        params = [p.detach().clone().requires_grad_() for p in run.policy.parameters()
                  if p.requires_grad]  # fmt: skip
        for param in params:
            param.grad = torch.randn_like(param)
        optimizer = torch.optim.AdamW(params, lr=1e-4, fused=fused)
        optimizer.step()
        synchronize(device)
        began = time.perf_counter()
        for _ in range(repeats):
            optimizer.step()
        synchronize(device)
        times["fused" if fused else "default"] = (time.perf_counter() - began) / repeats * 1e3
    return times


def profile_part(run: Loaded, windows: int, steps: int, peak: float | None) -> dict:
    """The profile of a cached step of `windows`, its MFU both ways, and the time ratio of
    the same step at twice the windows."""
    device = run.device
    precision = "bf16" if device.type == "cuda" else "fp32"
    one = CachedStep(run, windows, precision).build(steps + 3)
    timing = timed_steps(device, one.steps[: steps + 1])
    flops = counted_flops(one.steps[-1])
    result = {"windows": windows, "frames": one.frames, "tokens": one.tokens,
              "step_s": timing.median, "peak_mb": timing.peak_mb}  # fmt: skip
    result |= mfus(flops, one.litgpt(), timing.median, peak)
    result["profile"] = profile_steps(device, one.steps[:2])
    result["sync_sites"] = sync_sites(device, one.steps[2])
    result["adamw_ms"] = adamw_ms(run)
    del one
    release_memory(device)
    two = CachedStep(run, 2 * windows, precision).build(steps + 1)
    double = timed_steps(device, two.steps)
    result["double_batch"] = {"windows": 2 * windows, "frames": two.frames,
                              "step_s": double.median,
                              "time_ratio": double.median / timing.median}  # fmt: skip
    del two
    release_memory(device)
    return result


def batch_part(run: Loaded, windows: int, steps: int, peak: float | None) -> dict:
    """A grid batch as one micro-batch, with checkpointing when that runs out of memory."""
    device = run.device
    precision = "bf16" if device.type == "cuda" else "fp32"
    for checkpointing in (False, True):
        set_gradient_checkpointing(run.policy, checkpointing)
        try:
            step = CachedStep(run, windows, precision).build(steps + 1)
            timing = timed_steps(device, step.steps)
            flops = counted_flops(step.steps[0])
        except torch.cuda.OutOfMemoryError:
            step = None
            release_memory(device)
            continue
        result = {"windows": windows, "frames": step.frames, "tokens": step.tokens,
                  "checkpointing": checkpointing, "micro_batches": 1,
                  "samples_per_s": windows / timing.median, "step_s": timing.median,
                  "peak_mb": timing.peak_mb}  # fmt: skip
        result |= mfus(flops, step.litgpt(), timing.median, peak)
        del step
        set_gradient_checkpointing(run.policy, False)
        release_memory(device)
        return result
    set_gradient_checkpointing(run.policy, False)
    return {"windows": windows, "error": "out of memory as one micro-batch, checkpointed too"}


def batches_part(run: Loaded, grid: tuple[int, ...], steps: int, peak: float | None) -> list:
    results = []
    for windows in grid:
        results.append(batch_part(run, windows, steps, peak))
        print(f"   {windows} windows: {results[-1]}", flush=True)
    return results
