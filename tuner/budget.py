"""A sweep's wall-clock budget (`--time-budget 2h`, or `time_budget:` in a space).

Ray Tune's own time-budget stopper (what its `time_budget_s` makes) stops the
experiment; every trial has its epoch's checkpoint by then (one report = one
checkpoint). Tune records the trials it stopped as terminated, like those ASHA stopped,
so a watcher notes which were still live when the budget ran out; `--resume` reopens
exactly those (the budget applies again only when `--time-budget` is given again).

Test hook (like trainables/tune_function.py's hold file; never set it in a real run): with
`VLA_TUNE_BUDGET_AFTER_CHECKPOINTS=N` in the sweep's process, the budget's clock starts
only once Tune has registered N trial checkpoints. With trials held after their first
report, a test so lets the budget run out with each of them at its checkpoint, without
depending on how long anything takes.
"""

from __future__ import annotations

import json
import os
import re
import time
from typing import Any

from ray.tune import Callback
from ray.tune.stopper import TimeoutStopper

from trainables.progress import duration

BUDGET_FILE = "budget_stop.json"  # the trials the budget cut, until --resume reopens them
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd])")


def parse_duration(text: str) -> float:
    """Seconds in '2h', '90m', '1h30m', '45s' or a plain number of seconds; ValueError
    naming what was expected otherwise."""
    text = str(text).strip().lower()
    try:
        seconds = float(text)
    except ValueError:
        parts = DURATION.findall(text)
        if not parts or "".join(n + u for n, u in parts) != text.replace(" ", ""):
            raise ValueError(
                f"expected a duration like 2h, 90m, 1h30m or 45s, got {text!r}"
            ) from None
        seconds = sum(float(n) * UNITS[u] for n, u in parts)
    if seconds <= 0:
        raise ValueError(f"a time budget must be > 0, got {text!r}")
    return seconds


def budget_option(text: str) -> float:
    """`parse_duration` for argparse, which prints only an ArgumentTypeError's message."""
    import argparse

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


AFTER_CHECKPOINTS_ENV = "VLA_TUNE_BUDGET_AFTER_CHECKPOINTS"
_registered = [0]  # trial checkpoints Tune registered in this sweep (BudgetWatch counts)


def clock_started() -> bool:
    """Whether the budget's clock runs: always, unless the test hook holds it."""
    wanted = os.environ.get(AFTER_CHECKPOINTS_ENV)
    return not wanted or _registered[0] >= int(wanted)


class BudgetStopper(TimeoutStopper):
    """Tune's TimeoutStopper, whose clock starts at its first check (after Tune's set-up),
    here the first check once `clock_started()`."""

    def stop_all(self) -> bool:
        return clock_started() and super().stop_all()


def stopper(budget_s: float | None) -> BudgetStopper | None:
    """The `stop=` of a phase's RunConfig: its budget, or none."""
    return BudgetStopper(budget_s) if budget_s else None


class BudgetWatch(Callback):
    """Which trials ended before the budget ran out (finished, stopped by ASHA, failed):
    the others were cut by it. Its clock starts with Tune's loop, as Tune's own does."""

    def __init__(self, budget_s: float | None) -> None:
        self.budget_s = budget_s
        self.start: float | None = None
        self.seen: list[str] = []
        self.ended_in_time: set[str] = set()
        _registered[0] = 0

    def on_checkpoint(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        # Tune registers the checkpoint right after, before its next budget check.
        _registered[0] += 1

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        if self.start is None and clock_started():  # before the stopper's first check
            self.start = time.monotonic()

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        self.seen = [t.trial_id for t in trials]

    def _ended(self, trial: Any) -> None:
        if self.start is None or self.budget_s is None:
            return
        if time.monotonic() - self.start < self.budget_s:
            self.ended_in_time.add(trial.trial_id)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ended(trial)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ended(trial)

    def ran_out(self) -> bool:
        return (
            self.budget_s is not None
            and self.start is not None
            and time.monotonic() - self.start >= self.budget_s
        )


def cut_trials(results: Any, watch: BudgetWatch, max_t: int) -> list[str]:
    """The trials the budget stopped before their last epoch ([] when it did not run out)."""
    if not watch.ran_out():
        return []
    done = {
        str((r.metrics or {}).get("trial_id"))
        for r in results
        if int((r.metrics or {}).get("training_iteration", 0)) >= max_t
    }
    return [t for t in watch.seen if t not in done and t not in watch.ended_in_time]


def reopen(storage: Any) -> int:
    """Before `--resume`: drop the saved sweep's time budget from Ray's experiment state
    (Tune restores its stopper, spent budget included, over the resumed run's), and mark
    the trials a budget cut as paused, so Tune resumes them from their checkpoints and
    hands out the grid points it had not started. Returns how many were reopened."""
    import pyarrow.fs

    saved = storage.read_json(BUDGET_FILE) or {}
    cut = set(saved.get("cut", []))
    fs, root = pyarrow.fs.FileSystem.from_uri(storage.experiment_uri)
    names = sorted(
        info.path
        for info in fs.get_file_info(pyarrow.fs.FileSelector(root))
        if info.base_name.startswith("experiment_state-") and info.base_name.endswith(".json")
    )
    if not names:
        return 0
    with fs.open_input_stream(names[-1]) as f:
        state = json.loads(f.read().decode())
    state["runner_data"].pop("_stopper", None)  # the resumed run's own budget, if any
    reopened = 0
    for entry in state["trial_data"]:
        trial = json.loads(entry[0])
        if trial.get("trial_id") in cut and trial.get("status") == "TERMINATED":
            trial["status"] = "PAUSED"
            entry[0] = json.dumps(trial, indent=2)
            reopened += 1
    with fs.open_output_stream(names[-1]) as f:
        f.write(json.dumps(state).encode())
    if cut:
        reopen_generator(fs, root)
        storage.write_json(BUDGET_FILE, {"cut": []})
    return reopened


# Tune's generator of new trials, and the key of its saved state that says it is done:
# its own variant generator (grid, random) or the wrapper around a searcher (optuna).
GENERATOR_STATES = {"basic-variant-state-": "_finished", "search_gen_state-": "finished"}


def reopen_generator(fs: Any, root: str) -> None:
    """Tune marks its generator finished when the budget stops it; the grid points it had
    not handed out, or the samples a searcher had not drawn, must still come after
    --resume. (Ray's own state files, which Tuner.restore unpickles next anyway.)"""
    import pyarrow.fs
    import ray.cloudpickle as cloudpickle

    files = fs.get_file_info(pyarrow.fs.FileSelector(root))
    for prefix, key in GENERATOR_STATES.items():
        names = sorted(info.path for info in files if info.base_name.startswith(prefix))
        if not names:
            continue
        with fs.open_input_stream(names[-1]) as f:
            state = cloudpickle.loads(f.read())
        state[key] = False
        with fs.open_output_stream(names[-1]) as f:
            f.write(cloudpickle.dumps(state))


def stop_line(storage: Any, storage_path: str, stopped: int, left: int, elapsed: float) -> str:
    return (
        f"the time budget ended the sweep after {duration(elapsed)} with {left} trials left "
        f"({stopped} stopped at their last checkpoint, the others not started): continue "
        f"with  python -m tuner.run --resume --name "
        f"{storage.name} --storage-path {storage_path}  (without a budget unless "
        "--time-budget is given again)"
    )
