"""Tune's overhead over the calibration, measured by each search that ran to its end.

A calibration (trainables/calibrate.py) runs one trial alone; in a sweep the trials share
the machine with each other, with Ray and with the MLflow logging, and Tune spends time
between trials; each phase waits for Ray to start its trial workers, which import the
task again. A finished search compares its trials' own seconds with what the calibration
said for the epochs they ran, times how long it took to start its first trials, and
divides the wall time left outside the trials among them; the next forecast of the same
task on the same device and concurrency applies all of it (tuner/forecast.py).
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray.tune import Callback

from trainables.cache import Records


@dataclass(frozen=True)
class Overhead:
    """How a finished search's trials compared with their calibration. `speed`: the
    seconds of their epochs after the first over the calibrated epoch time (the machine
    shared); `start_s`: what a trial's first epoch took beyond one such epoch in a worker
    that had run a trial before (build, data, features, warm-up); `trial_s`: wall time per
    trial outside the trials (Tune's scheduling, result handling, MLflow); `phase_s`: what
    each phase pays once before its trials run at that pace (Ray starts the trial workers,
    which import the task and warm up; the search and the confirmation each start theirs)."""

    speed: float
    start_s: float
    trial_s: float
    phase_s: float
    sweep: str

    def trial_seconds(self, calibration: Any, epochs: float) -> float:
        return self.start_s + epochs * calibration.epoch_s() * self.speed + self.trial_s

    def describe(self) -> str:
        return (
            f"epochs x{self.speed:.2f}, {self.phase_s:.1f} s to start the workers, "
            f"{self.start_s:.1f} s to start a trial, +{self.trial_s:.1f} s between trials, "
            f"as measured in {self.sweep}"
        )


class FirstResults(Callback):
    """When each trial's first result arrived (time.monotonic()): with the time its first
    epoch took, when the trial started, and so how long its phase took to start it."""

    def __init__(self) -> None:
        self.at: dict[str, float] = {}

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info):
        self.at.setdefault(trial.trial_id, time.monotonic())


def overheads(root: Path | None = None) -> Records[Overhead]:
    """Kept beside the calibrations, one per task, device and concurrency: a trial's start
    and the workers' imports are the task's own."""
    return Records(Overhead, root, prefix="overhead-")


def read_overhead(
    task: str, device: str, concurrency: int, root: Path | None = None
) -> Overhead | None:
    return overheads(root).get([task, device, concurrency])


# config, epochs, first epoch's seconds, all epochs' seconds, and the seconds from the
# phase's start to its first result (None: not seen)
Trial = tuple[dict[str, Any], int, float, float, float | None]


def measure_overhead(fc: Any, trials: list[Trial], wall_s: float, sweep: str) -> Overhead | None:
    """From a finished search's trials and its wall time; None when nothing compares.
    The first trial on each slot runs in a fresh worker: its first epoch holds the
    worker's imports and warm-up, which count once per phase (`phase_s`), not per trial."""
    from trainables.calibrate import plan_key

    known = [
        (fc.by_plan.get(plan_key(c)), n, first, total, at) for c, n, first, total, at in trials
    ]
    known = [t for t in known if t[0] is not None and t[1] >= 1]
    if not known:
        return None
    later = [(cal.epoch_s() * (n - 1), total - first) for cal, n, first, total, _ in known if n > 1]
    calibrated = sum(c for c, _ in later)
    speed = sum(s for _, s in later) / calibrated if calibrated > 0 else 1.0
    # By when each trial began: the first on each slot ran in a fresh worker.
    by_start = sorted(known, key=lambda t: math.inf if t[4] is None else t[4] - t[2])
    fresh, warm = by_start[: fc.concurrency], by_start[fc.concurrency :]
    if warm:
        start = max(0.0, statistics.mean(f - speed * cal.epoch_s() for cal, _, f, _, _ in warm))
    else:  # no trial ran in a worker that had run one before: the calibrated set-up
        start = statistics.mean(cal.setup_s for cal, *_ in fresh)

    def warm_first(calibration: Any) -> float:
        return start + speed * calibration.epoch_s()

    seen = [at - warm_first(cal) for cal, _, _, _, at in fresh if at is not None]
    imports = max(cal.import_s for cal, *_ in fresh)
    phase = max(0.0, statistics.mean(seen)) if seen else imports
    cold = sum(max(0.0, first - warm_first(cal)) for cal, _, first, _, _ in fresh)
    inside = sum(total for *_, total, _ in known) - cold
    outside = max(0.0, (wall_s - phase) * fc.concurrency - inside) / len(known)
    return Overhead(speed=speed, start_s=start, trial_s=outside, phase_s=phase, sweep=sweep)


def save_overhead(fc: Any, overhead: Overhead, root: Path | None = None) -> None:
    overheads(root).put([fc.task, fc.device, fc.concurrency], overhead)


def learn(fc: Any, results: Any, sweep: str, started: float, firsts: FirstResults) -> None:
    """After a search that ran to its end (from time.monotonic() `started`, now): measure
    Tune's overhead against the calibration and keep it for the next forecast of this
    task on this device and concurrency."""
    if fc is None:
        return
    wall_s = time.monotonic() - started
    trials = []
    for r in results:
        frame = r.metrics_dataframe
        if r.error is not None or not r.config or frame is None or not len(frame):
            continue
        times = frame["time_this_iter_s"]
        at = firsts.at.get(str(frame["trial_id"].iloc[0]))
        first_at = None if at is None else at - started
        trials.append((r.config, len(times), float(times.iloc[0]), float(times.sum()), first_at))
    overhead = measure_overhead(fc, trials, wall_s, sweep)
    if overhead is not None:
        save_overhead(fc, overhead)
