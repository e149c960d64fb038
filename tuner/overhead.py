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
    """How a finished search's trials compared with their calibration: `speed` = the
    trials' own seconds / the calibrated seconds for the epochs they ran (sharing the
    machine), `trial_s` = Tune's seconds per trial outside the trials (scheduling, start)."""

    speed: float
    trial_s: float
    sweep: str

    def describe(self) -> str:
        return f"x{self.speed:.2f} and +{self.trial_s:.1f} s per trial as measured in {self.sweep}"


def overhead_path(device: str, concurrency: int, root: Path | None = None) -> Path:
    from trainables.cache import default_cache_dir

    key = hashlib.sha256(f"{device}|{concurrency}".encode()).hexdigest()[:24]
    return (root or default_cache_dir() / "calibration") / f"overhead-{key}.json"


def read_overhead(device: str, concurrency: int, root: Path | None = None) -> Overhead | None:
    try:
        return Overhead(**json.loads(overhead_path(device, concurrency, root).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def measure_overhead(
    fc: Any, trials: list[tuple[dict[str, Any], int, float]], wall_s: float, sweep: str
) -> Overhead | None:
    """From a finished search's trials as (config, epochs run, seconds inside the trial)
    and the search's wall time. None when there is nothing to compare."""
    from trainables.calibrate import cost_key

    predicted, actual = 0.0, 0.0
    for config, epochs, seconds in trials:
        calibration = fc.by_plan.get(repr(cost_key({**config, "torch_threads": 0})))
        if calibration is None or epochs < 1:
            continue
        predicted += calibration.trial_s(epochs)
        actual += seconds
    if predicted <= 0 or not trials:
        return None
    outside = max(0.0, wall_s * fc.concurrency - actual) / len(trials)
    return Overhead(speed=actual / predicted, trial_s=outside, sweep=sweep)


def save_overhead(fc: Any, overhead: Overhead, root: Path | None = None) -> None:
    from trainables.cache import write_atomic

    text = json.dumps(dataclasses.asdict(overhead)).encode()
    write_atomic(overhead_path(fc.device, fc.concurrency, root), lambda f: f.write(text))


def learn(fc: Any, results: Any, wall_s: float, sweep: str) -> None:
    """After a search that ran to its end: measure Tune's overhead against the calibration
    and keep it for the next forecast on this device and concurrency."""
    if fc is None:
        return
    trials = [
        (
            r.config,
            int((r.metrics or {}).get("training_iteration", 0)),
            float((r.metrics or {}).get("time_total_s", 0.0)),
        )
        for r in results
        if r.error is None and r.config and r.metrics
    ]
    overhead = measure_overhead(fc, trials, wall_s, sweep)
    if overhead is not None:
        save_overhead(fc, overhead)
