"""One round of bench/trainable_step.py: the project's train() and the plain loop on
freshly built models, alternated one of two ways.

  step (default on CPU, where the machine is shared and noisy): both models live side by
       side; train() runs in a worker thread that the benchmark releases one optimizer
       step at a time (its `epoch_steps` is wrapped, nothing else changes), alternating
       with one plain step (the order flips every pair). On CUDA the plain loop then
       synchronizes once per step for its timing.
  run  (default on CUDA): whole runs alternate: train() untouched (its own
       `train_seconds`), then the plain loop timed over all its timed steps at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from unittest import mock

import numpy as np
import torch
from common import BenchError, TowerFlops, peak_memory, release_memory, synchronize
from plain_loop import PlainLoop

import trainables.mobile_vla.trainable as trainable_module
from trainables.mobile_vla.dataset import MobileVLAData
from trainables.mobile_vla.trainable import train

METHODS = ("project", "plain")


@dataclass
class RoundResult:
    """One round of one method: timed samples and seconds (per step in step mode)."""

    samples: int = 0
    seconds: float = 0.0
    step_seconds: list[float] = field(default_factory=list)  # step mode only
    loss: float = float("nan")  # mean per-step training loss over the timed epochs
    peak_mem_mb: float | None = None  # CUDA, run mode only (step mode: both resident)
    towers: list[TowerFlops] = field(default_factory=list)  # plain: the model's FLOPs
    trainable: int = 0  # plain: trainable parameters

    @property
    def rate(self) -> float:
        return self.samples / self.seconds


# ---------------------------------------------------------------------------------------


class _Abort(Exception):
    """Raised inside the parked train() to end it when the benchmark stops early."""


class ProjectSteps:
    """train() in a worker thread that runs one optimizer step per `step()` call.

    `epoch_steps` in the trainable's module is wrapped: before handing out a step's
    micro-batch indices the worker parks until released, and the time from its release
    to train() asking for the next step is that step's time (one iteration of train()'s
    loop). Between steps the worker is parked, so nothing of it runs during a plain step.
    """

    def __init__(self, config: dict[str, Any], data: MobileVLAData):
        self.reports: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self._parked = self._go = self._finished = self._abort = False
        self.steps_run = 0
        self._seconds: float | None = None
        self._error: BaseException | None = None
        self._original = trainable_module.epoch_steps
        self._patch = mock.patch.object(trainable_module, "epoch_steps", self._gated)
        self._patch.start()
        self._thread = threading.Thread(target=self._run, args=(config, data), daemon=True)
        self._thread.start()

    def _run(self, config: dict[str, Any], data: MobileVLAData) -> None:
        try:
            train(config, lambda metrics, _dir: self.reports.append(metrics), data=data)
        except _Abort:
            pass
        except BaseException as exc:  # handed to the driver thread
            self._error = exc
        finally:
            with self._cond:
                self._finished = True
                self._cond.notify_all()

    def _gated(self, *args: Any, **kwargs: Any) -> Iterator:
        for micro_indices in self._original(*args, **kwargs):
            with self._cond:
                self._parked = True
                self._cond.notify_all()
                self._cond.wait_for(lambda: self._go)
                self._go = self._parked = False
                if self._abort:
                    raise _Abort
            started = time.perf_counter()
            yield micro_indices
            seconds = time.perf_counter() - started
            with self._cond:
                self._seconds = seconds
                self.steps_run += 1
                self._cond.notify_all()

    def _check(self) -> None:
        if self._error is not None:
            raise BenchError(f"train() failed: {self._error!r}") from self._error

    def step(self) -> float:
        """Release one optimizer step, wait until the worker parks again; its seconds."""
        with self._cond:
            self._cond.wait_for(lambda: self._parked or self._finished)
            self._check()
            if not self._parked:
                raise BenchError(
                    f"train() finished after {self.steps_run} steps, before the benchmark's "
                    "last one (0: its loop no longer calls trainable.epoch_steps?)"
                )
            self._seconds, self._go = None, True
            self._cond.notify_all()
            self._cond.wait_for(lambda: self._seconds is not None or self._finished)
            self._check()
            seconds = self._seconds
            # The worker goes on to the next park (or the end-of-epoch report): wait, so
            # that none of it overlaps the next timed plain step.
            self._cond.wait_for(lambda: self._parked or self._finished)
            self._check()
        if seconds is None:
            raise BenchError("train() stopped in the middle of a step")
        return seconds

    def close(self, abort: bool = False) -> None:
        """Wait for train() to finish (its last report); `abort` ends it at its next park."""
        if abort:
            with self._cond:
                self._abort = self._go = True
                self._cond.notify_all()
        self._thread.join()
        self._patch.stop()
        if not abort:
            self._check()


def mean_report_loss(reports: list[dict[str, Any]], warmup_epochs: int) -> float:
    return float(np.mean([m["train_loss"] for m in reports[warmup_epochs:]]))


# ---------------------------------------------------------------------------------------
# one round


def round_step_mode(
    config: dict[str, Any], data: MobileVLAData, warmup_epochs: int, parity: int
) -> dict[str, RoundResult]:
    """Both models side by side, one optimizer step each in turn."""
    device = torch.device(config["device"])
    batch_size = config["batch_size"]
    steps_per_epoch = len(data.train) // batch_size
    warm = warmup_epochs * steps_per_epoch
    total = config["max_epochs"] * steps_per_epoch
    plain = PlainLoop(config, data)  # built first: the two builds share torch's RNG
    plain_steps = plain.steps()
    project = ProjectSteps(config, data)

    def plain_step() -> float:
        synchronize(device)
        started = time.perf_counter()
        next(plain_steps)
        synchronize(device)
        return time.perf_counter() - started

    results = {name: RoundResult() for name in METHODS}
    try:
        for index in range(total):
            first_project = (index + parity) % 2 == 0
            timings = {}
            for name in ("project", "plain") if first_project else ("plain", "project"):
                timings[name] = project.step() if name == "project" else plain_step()
            if index >= warm:
                for name, seconds in timings.items():
                    results[name].step_seconds.append(seconds)
                    results[name].seconds += seconds
                    results[name].samples += batch_size
    except BaseException:
        project.close(abort=True)
        raise
    project.close()
    results["project"].loss = mean_report_loss(project.reports, warmup_epochs)
    results["plain"].loss = plain.mean_loss(warm)
    results["plain"].towers, results["plain"].trainable = plain.towers, plain.trainable
    return results  # the caller releases the models' memory


def run_project(config: dict[str, Any], data: MobileVLAData, warmup_epochs: int) -> RoundResult:
    """train() untouched; its own per-epoch train_seconds, warm-up epochs dropped."""
    device = torch.device(config["device"])
    reports: list[dict[str, Any]] = []
    release_memory(device)
    train(config, lambda metrics, _dir: reports.append(metrics), data=data)
    timed = reports[warmup_epochs:]
    return RoundResult(
        samples=round(sum(m["samples_per_s"] * m["train_seconds"] for m in timed)),
        seconds=sum(m["train_seconds"] for m in timed),
        loss=mean_report_loss(reports, warmup_epochs),
        peak_mem_mb=peak_memory(device),
    )


def run_plain(config: dict[str, Any], data: MobileVLAData, warmup_epochs: int) -> RoundResult:
    """The plain loop, timed from the first timed step to the last (synced at both ends)."""
    device = torch.device(config["device"])
    release_memory(device)
    plain = PlainLoop(config, data)
    steps_per_epoch = len(data.train) // config["batch_size"]
    warm = warmup_epochs * steps_per_epoch
    steps = plain.steps()
    for _ in range(warm):
        next(steps)
    synchronize(device)
    started = time.perf_counter()
    timed = sum(1 for _ in steps)
    synchronize(device)
    result = RoundResult(
        samples=timed * config["batch_size"],
        seconds=time.perf_counter() - started,
        loss=plain.mean_loss(warm),
        peak_mem_mb=peak_memory(device),
        towers=plain.towers,
        trainable=plain.trainable,
    )
    del plain, steps
    release_memory(device)
    return result


def round_run_mode(
    config: dict[str, Any], data: MobileVLAData, warmup_epochs: int, parity: int
) -> dict[str, RoundResult]:
    runners: dict[str, Callable[..., RoundResult]] = {
        "project": run_project,
        "plain": run_plain,
    }
    names = METHODS if parity == 0 else tuple(reversed(METHODS))
    return {name: runners[name](config, data, warmup_epochs) for name in names}
