"""A sweep's wall-clock budget (`--time-budget 2h`, or `time_budget:` in a space).

Ray Tune's own `time_budget_s` stops the experiment; every trial has its epoch's
checkpoint by then (one report = one checkpoint). Tune records the trials it stopped as
terminated, like those ASHA stopped, so a watcher notes which were still live when the
budget ran out; `--resume` reopens exactly those (the budget applies again only when
`--time-budget` is given again).
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from ray.tune import Callback

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


class Clock:
    """The sweep's wall time from the first trial's launch, against its budget."""

    def __init__(self, budget_s: float | None):
        self.budget_s = budget_s
        self.start = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def left(self) -> float | None:
        if self.budget_s is None:
            return None
        return max(1.0, self.budget_s - self.elapsed())


class BudgetWatch(Callback):
    """Which trials were live at the last step: those are the ones the budget cut when
    Tune stops the experiment on its time budget."""

    def __init__(self) -> None:
        self.live: list[str] = []

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        self.live = [t.trial_id for t in trials if t.status not in ("TERMINATED", "ERROR")]


def cut_trials(results: Any, watch: BudgetWatch, max_t: int) -> list[str]:
    """The trials the budget stopped before their last epoch."""
    done = {
        str((r.metrics or {}).get("trial_id"))
        for r in results
        if int((r.metrics or {}).get("training_iteration", 0)) >= max_t
    }
    return [t for t in watch.live if t not in done]


def reopen(storage: Any) -> int:
    """Before `--resume`: mark the trials the budget cut as paused in Ray's experiment
    state, so Tune resumes them from their checkpoints. Returns how many."""
    import pyarrow.fs

    saved = storage.read_json(BUDGET_FILE)
    if not saved or not saved.get("cut"):
        return 0
    cut = set(saved["cut"])
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
    reopened = 0
    for entry in state["trial_data"]:
        trial = json.loads(entry[0])
        if trial.get("trial_id") in cut and trial.get("status") == "TERMINATED":
            trial["status"] = "PAUSED"
            entry[0] = json.dumps(trial, indent=2)
            reopened += 1
    with fs.open_output_stream(names[-1]) as f:
        f.write(json.dumps(state).encode())
    storage.write_json(BUDGET_FILE, {"cut": []})
    return reopened


def stop_line(storage: Any, storage_path: str, cut: int, elapsed: float) -> str:
    from tuner.forecast import duration

    return (
        f"the time budget ended the sweep after {duration(elapsed)} ({cut} trials stopped "
        f"with their checkpoints): continue with  python -m tuner.run --resume --name "
        f"{storage.name} --storage-path {storage_path}  (without a budget unless "
        "--time-budget is given again)"
    )
