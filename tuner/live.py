"""A compact live view of a sweep, instead of Ray's full trial table.

One line: trials running / finished / stopped early / failed, the best metric so far and
its configuration, elapsed time and an estimate of what is left. Redrawn in place on a
terminal; a plain line on every finished trial (and every `every_s`) otherwise.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from ray.tune import Callback

from trainables.progress import duration


class LiveView(Callback):
    def __init__(
        self,
        metric: str,
        mode: str,
        total: int,
        max_t: int,
        describe: Any,
        stream: TextIO | None = None,
        every_s: float = 30.0,
        eta: Any = None,
    ):
        self.metric, self.mode, self.total, self.max_t = metric, mode, total, max_t
        self.describe = describe  # trial -> short hyperparameter text
        self.eta = eta  # tuner.eta.Eta: what is left from the epochs measured so far
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self.every_s = every_s
        self.start = time.monotonic()
        self.last_print = 0.0
        self.best: tuple[float, str] | None = None
        self.finished: set[str] = set()

    def __getstate__(self) -> dict:
        # Ray pickles callbacks with the experiment (for --resume): drop the stream.
        return {k: v for k, v in self.__dict__.items() if k != "stream"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.stream = sys.stdout
        self.tty = self.stream.isatty()
        self.start = time.monotonic()

    def _better(self, value: float) -> bool:
        if self.best is None:
            return True
        return value < self.best[0] if self.mode == "min" else value > self.best[0]

    def on_trial_result(self, iteration, trials, trial, result, **info):
        value = result.get(self.metric)
        if isinstance(value, (int, float)) and self._better(value):
            self.best = (float(value), self.describe(trial))

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.finished.add(trial.trial_id)
        self.draw(trials, force=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        self.finished.add(trial.trial_id)
        self.draw(trials, force=True)

    def on_step_end(self, iteration, trials, **info):
        self.draw(trials)

    def on_experiment_end(self, trials, **info):
        self.draw(trials, force=True)
        if self.tty:
            self.stream.write("\n")

    def counts(self, trials) -> dict[str, int]:
        counts = {"running": 0, "done": 0, "early": 0, "failed": 0, "pending": 0}
        for trial in trials:
            epochs = int((trial.last_result or {}).get("training_iteration", 0))
            if trial.status == "RUNNING":
                counts["running"] += 1
            elif trial.status == "ERROR":
                counts["failed"] += 1
            elif trial.status == "TERMINATED":
                counts["done" if epochs >= self.max_t else "early"] += 1
            else:
                counts["pending"] += 1
        counts["pending"] += max(0, self.total - len(trials))
        return counts

    def line(self, trials) -> str:
        c = self.counts(trials)
        elapsed = time.monotonic() - self.start
        ended = c["done"] + c["early"] + c["failed"]
        left_s = self.eta.left(trial_times(trials)) if self.eta else None
        if left_s is None and ended:
            left_s = elapsed / ended * (self.total - ended)
        left = f"~{duration(left_s)} left" if left_s is not None else "left ?"
        best = f"best {self.metric} {self.best[0]:.4f} ({self.best[1]})" if self.best else "best -"
        return (
            f"[{duration(elapsed)} {left}] {c['running']} running, {c['done']} finished, "
            f"{c['early']} stopped early, {c['failed']} failed, {c['pending']} pending | {best}"
        )

    def draw(self, trials, force: bool = False) -> None:
        now = time.monotonic()
        if self.tty:
            if force or now - self.last_print >= 1.0:
                self.stream.write("\r\033[K" + self.line(trials))
                self.stream.flush()
                self.last_print = now
        elif force or now - self.last_print >= self.every_s:
            self.stream.write(self.line(trials) + "\n")
            self.stream.flush()
            self.last_print = now


def trial_times(trials) -> list[tuple[str, int, float]]:
    """(status, epochs done, seconds inside the trial) of each trial Tune knows."""
    out = []
    for trial in trials:
        result = trial.last_result or {}
        epochs = int(result.get("training_iteration", 0))
        out.append((trial.status, epochs, float(result.get("time_total_s", 0.0))))
    return out
