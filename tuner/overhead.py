"""Tune's overhead over the calibration, measured by each search that ran to its end.

A calibration (trainables/calibrate.py) runs one trial alone; in a sweep the trials share
the machine with each other, with Ray and with the MLflow logging, and Tune spends time
between trials. A finished search compares its trials' own seconds with what the
calibration said for the epochs they ran, and the wall time left outside the trials; the
next forecast on the same device and concurrency applies both (tuner/forecast.py).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Overhead:
    """How a finished search's trials compared with their calibration. `speed`: the
    seconds of their epochs after the first over the calibrated epoch time (the machine
    shared); `start_s`: what a trial's first epoch took beyond one such epoch (build, data,
    features, warm-up in a worker); `trial_s`: wall time per trial outside the trials
    (Tune's scheduling, result handling, MLflow)."""

    speed: float
    start_s: float
    trial_s: float
    sweep: str

    def trial_seconds(self, calibration: Any, epochs: float) -> float:
        return self.start_s + epochs * calibration.epoch_s() * self.speed + self.trial_s

    def describe(self) -> str:
        return (
            f"epochs x{self.speed:.2f}, {self.start_s:.1f} s to start a trial, "
            f"+{self.trial_s:.1f} s between trials, as measured in {self.sweep}"
        )


def overhead_path(device: str, concurrency: int, root: Path | None = None) -> Path:
    from trainables.cache import default_cache_dir

    key = hashlib.sha256(f"{device}|{concurrency}".encode()).hexdigest()[:24]
    return (root or default_cache_dir() / "calibration") / f"overhead-{key}.json"


def read_overhead(device: str, concurrency: int, root: Path | None = None) -> Overhead | None:
    try:
        return Overhead(**json.loads(overhead_path(device, concurrency, root).read_text()))
    except (OSError, ValueError, TypeError):
        return None


Trial = tuple[dict[str, Any], int, float, float]  # config, epochs, first epoch's s, total s


def measure_overhead(fc: Any, trials: list[Trial], wall_s: float, sweep: str) -> Overhead | None:
    """From a finished search's trials and its wall time; None when nothing compares."""
    from trainables.calibrate import plan_key

    known = []
    for config, epochs, first_s, total_s in trials:
        calibration = fc.by_plan.get(plan_key(config))
        if calibration is not None and epochs >= 1:
            known.append((calibration.epoch_s(), epochs, first_s, total_s))
    if not known:
        return None
    later = [(e * (n - 1), total - first) for e, n, first, total in known if n > 1]
    calibrated = sum(c for c, _ in later)
    speed = sum(s for _, s in later) / calibrated if calibrated > 0 else 1.0
    start = sum(first - speed * e for e, _, first, _ in known) / len(known)
    inside = sum(total for *_, total in known)
    # The workers' imports at the search's start are forecast on their own (import_s).
    imports = max((c.import_s for c in fc.by_plan.values()), default=0.0)
    outside = max(0.0, (wall_s - imports) * fc.concurrency - inside) / len(known)
    return Overhead(speed=speed, start_s=max(0.0, start), trial_s=outside, sweep=sweep)


def save_overhead(fc: Any, overhead: Overhead, root: Path | None = None) -> None:
    from trainables.cache import write_atomic

    text = json.dumps(dataclasses.asdict(overhead)).encode()
    write_atomic(overhead_path(fc.device, fc.concurrency, root), lambda f: f.write(text))


def learn(fc: Any, results: Any, wall_s: float, sweep: str) -> None:
    """After a search that ran to its end: measure Tune's overhead against the calibration
    and keep it for the next forecast on this device and concurrency."""
    if fc is None:
        return
    trials = []
    for r in results:
        frame = r.metrics_dataframe
        if r.error is not None or not r.config or frame is None or not len(frame):
            continue
        times = frame["time_this_iter_s"]
        trials.append((r.config, len(times), float(times.iloc[0]), float(times.sum())))
    overhead = measure_overhead(fc, trials, wall_s, sweep)
    if overhead is not None:
        save_overhead(fc, overhead)
