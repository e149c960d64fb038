"""What one trial costs, measured: a few optimizer steps of the trial's real step path
(the task's `Trial` and the shared `Trainer`) on the device the trials will use, plus the
fixed costs around them (imports, model build, validation, checkpoint).

The sweep's forecast (tuner/forecast.py) multiplies these by the epochs it expects. A
measurement is kept on disk beside the decoded frames, keyed by everything that changes
the cost (model, data, device, batch plan), so a second sweep of the same set-up, and a
dry run, read it instead of measuring again. Nothing here imports ray.
"""

from __future__ import annotations

import importlib
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from trainables.cache import Records
from trainables.training import resolve_device

# Bump when what is measured changes: older entries are then measured again.
CALIBRATION_VERSION = 3
# Keys that change the values a trial computes but not the work it does.
COST_FREE_KEYS = frozenset(
    {
        "learning_rate",
        "weight_decay",
        "warmup_ratio",
        "lr_schedule",
        "min_lr_scale",
        "grad_clip",
        "seed",
        "max_epochs",
        "lora_dropout",
    }
)


@dataclass(frozen=True)
class Calibration:
    """Seconds of one trial's parts on one device."""

    device: str  # e.g. "cuda:0 (NVIDIA H200)" or "cpu (2 threads)"
    precision: str
    batching: dict[str, int]  # how a step is split, in the task's `batch_keys`
    steps_per_epoch: int
    step_s: float  # one optimizer step, warm (the median of the timed steps)
    import_s: float  # the task's imports in a fresh process (once per worker)
    setup_s: float  # model build and batches, plus the first step's warm-up
    validate_s: float  # one validation pass
    checkpoint_s: float  # one checkpoint written

    def epoch_s(self) -> float:
        return self.steps_per_epoch * self.step_s + self.validate_s + self.checkpoint_s

    def trial_s(self, epochs: float) -> float:
        """A trial of `epochs` epochs in an already started worker."""
        return self.setup_s + epochs * self.epoch_s()

    def describe(self) -> str:
        split = ", ".join(f"{k}={v}" for k, v in self.batching.items())
        return f"{self.step_s:.2g} s per step at {split} on {self.device}"


def cost_key(flat: dict[str, Any]) -> dict[str, str]:
    """The part of a flat config that decides a trial's cost."""
    return {k: repr(v) for k, v in sorted(flat.items()) if k not in COST_FREE_KEYS}


def device_label(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)"


def plan_key(config: dict[str, Any]) -> str:
    """The calibration a trial of `config` is forecast with: its cost key, threads aside
    (they are the device's part, named in the calibration itself)."""
    return repr(cost_key({**config, "torch_threads": 0}))


def stack_versions() -> dict[str, str]:
    """The versions that decide how long a trial's imports take."""
    from importlib.metadata import PackageNotFoundError, version

    found = {"torch": torch.__version__}
    for name in ("transformers", "peft", "numpy"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "absent"
    return found


@dataclass(frozen=True)
class ImportTime:
    import_s: float
    key: dict[str, Any]  # what it was measured with: task, interpreter, versions


def worker_import_s(task: str, root: Path) -> float:
    """Seconds a fresh interpreter takes to import the task's trial module, as each new
    Ray worker does before its first trial. This process has loaded that stack by now, so
    a subprocess measures it; once per interpreter and versions (kept under `root`)."""
    key = {"task": task, "python": sys.executable, "versions": stack_versions()}
    records = Records(ImportTime, root / "imports")
    found = records.get(key)
    if found is not None:
        return found.import_s
    module = f"trainables.{task}.trainable"
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", f"import {module}"], capture_output=True, text=True
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"a fresh interpreter could not import {module}: {last}")
    records.put(key, ImportTime(seconds, key))
    return seconds


def measure(
    task: str, flat: dict[str, Any], data: Any, steps: int = 3, import_s: float = 0.0
) -> Calibration:
    """Build the trial as a sweep would, run `steps` optimizer steps (the first is the
    warm-up; the rest are timed), one validation and one checkpoint. Its memory goes back
    when it is done, and the card share it set is lifted: in a local sweep this runs in
    the driver, and the trials follow on the same card. `import_s` is recorded as given:
    a fresh worker's imports are measured apart (`worker_import_s`)."""
    from trainables.memory import TrialMemory
    from trainables.micro_batch import set_memory_share
    from trainables.task import get_task
    from trainables.trial_loop import apply_run_options

    if steps < 2:
        raise ValueError(f"steps must be >= 2 (one warm-up, one timed), got {steps}")
    trial_class = importlib.import_module(f"trainables.{task}.trainable").train.trial_class
    cfg = trial_class.parse_config(flat)
    device = resolve_device(cfg.train.device)
    apply_run_options(cfg.run, cfg.train.device)
    torch.manual_seed(cfg.train.seed)
    try:
        with TrialMemory(device):
            keys = get_task(task).batch_keys
            return timed_trial(trial_class, cfg, flat, data, steps, import_s, keys)
    finally:
        set_memory_share(device, 1.0)


def timed_trial(
    trial_class: Any,
    cfg: Any,
    flat: dict[str, Any],
    data: Any,
    steps: int,
    import_s: float,
    batch_keys: tuple[str, ...],
) -> Calibration:
    """The measuring itself: set-up, steps (out-of-memory splits as a trial's), validation
    and checkpoint of one trial. Its batching is what the trial's params say under the
    task's `batch_keys` (the values it settled on, a micro-batch probe's included)."""
    from trainables.trial_loop import save_checkpoint

    started = time.perf_counter()
    trial = trial_class(cfg, data)
    setup_s = time.perf_counter() - started
    trainer = trial.trainer
    times: list[float] = []
    epoch = 0
    while len(times) < steps:
        for micro_batches, _ in trial.steps(epoch):
            started = time.perf_counter()
            trainer.step(micro_batches, trial.loss, trial.count_targets, trial.split, trial.unit)
            synchronize(trainer.device)
            times.append(time.perf_counter() - started)
            if len(times) == steps:
                break
        epoch += 1
    step_s = statistics.median(times[1:])
    started = time.perf_counter()
    trial.validate()
    synchronize(trainer.device)
    validate_s = time.perf_counter() - started
    with tempfile.TemporaryDirectory(prefix="calibrate-") as tmp:
        started = time.perf_counter()
        save_checkpoint(Path(tmp), trial, 0, flat)
        checkpoint_s = time.perf_counter() - started
    return Calibration(
        device=device_label(trainer.device),
        precision=trainer.precision,
        batching={k: trial.derived[k] for k in batch_keys},
        steps_per_epoch=trainer.plan.steps_per_epoch,
        step_s=step_s,
        import_s=import_s,
        setup_s=setup_s + max(0.0, times[0] - step_s),
        validate_s=validate_s,
        checkpoint_s=checkpoint_s,
    )


def synchronize(device: torch.device) -> None:
    """Wait for the device: a CUDA step returns before its kernels finish."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class CalibrationCache(Records[Calibration]):
    """Measurements as small JSON files under `<cache>/calibration/`, one per key."""

    def __init__(self, root: str | Path | None = None):
        super().__init__(Calibration, root)

    @staticmethod
    def key(task: str, flat: dict[str, Any], data_id: str, device: str) -> dict[str, Any]:
        """Everything that changes a trial's cost."""
        return {
            "version": CALIBRATION_VERSION,
            "task": task,
            "config": cost_key(flat),
            "data": data_id,
            "device": device,
        }


def calibrate(
    task: str,
    flat: dict[str, Any],
    data: Any,
    data_id: str,
    device: str,
    cache: CalibrationCache | None = None,
    steps: int = 3,
) -> tuple[Calibration, bool]:
    """The cached measurement of this (model, data, device, plan), else a new one
    (stored). Returns it and whether it came from the cache. `device` names where
    trials run ("cpu", "cuda"); the measurement runs there."""
    cache = cache or CalibrationCache()
    key = cache.key(task, flat, data_id, device_id(device, flat))
    found = cache.get(key)
    if found is not None:
        return found, True
    import_s = worker_import_s(task, cache.root)
    calibration = measure(task, {**flat, "device": device}, data, steps, import_s)
    cache.put(key, calibration)
    return calibration, False


def device_id(device: str, flat: dict[str, Any]) -> str:
    """The device as the cache key sees it: the card's name, or the CPU threads given."""
    if device.startswith("cuda") and torch.cuda.is_available():
        return device_label(resolve_device(device))
    return f"cpu x{flat.get('torch_threads') or torch.get_num_threads()}"
