"""Run a task's `train(config, report, data, checkpoint_dir)` as a Ray Tune trial.

The only place a trainable meets Ray: reports go through `ray.tune.report` with the
epoch's checkpoint directory, and a retried or resumed trial restarts from
`tune.get_checkpoint()`. The dataset comes in through `tune.with_parameters`, so it sits
in the object store once and every trial maps the same memory.

Failure-test hook (like Ray's own `RAY_testing_*` variables; never set it in a real run):
when `VLA_TUNE_HOLD_FILE` is set in a trial's process (Ray's worker processes inherit the
environment of the node's `ray start`), the trial waits after each report, its checkpoint
already persisted, until that file exists. A file holding a number N releases only the
first N reports of each trial run (counted from its start or restore) and holds the next;
"N NAME" does so in the Ray experiment NAME only (a sweep's confirmation is `confirm`).
A trial that starts waiting creates `<hold file>.waiting` first (best effort), so a test
can tell that a trial is held rather than not yet at its report.
A test can so keep a trial on a node it is about to kill, keep a node's CPU busy, or
stop a trial of one phase at a chosen epoch, without depending on timing.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from typing import Any

TrainFn = Callable[..., Any]
HOLD_FILE_ENV = "VLA_TUNE_HOLD_FILE"


def held(reports: int, path: str, experiment: str) -> bool:
    """Whether the hold file keeps a trial of `experiment` waiting after its `reports`-th
    report."""
    try:
        with open(path) as f:
            words = f.read().split()
    except FileNotFoundError:
        return True
    if not words or words[1:] not in ([], [experiment]):
        return False
    return reports > int(words[0])


def hold_after_report(reports: int, poll_s: float = 0.2) -> None:
    """Wait while $VLA_TUNE_HOLD_FILE holds the trial (see `held`); at once if unset.
    Creates `<hold file>.waiting` before the first wait."""
    path = os.environ.get(HOLD_FILE_ENV)
    if not path:
        return
    from ray import tune

    experiment = tune.get_context().get_experiment_name()
    waiting = False
    while held(reports, path, experiment):
        if not waiting:
            waiting = True
            with contextlib.suppress(OSError):  # a marker for tests, never a trial's failure
                open(f"{path}.waiting", "a").close()
        time.sleep(poll_s)


def tune_function(train_fn: TrainFn, task: str) -> Callable[..., None]:
    """`train_fn` as a Tune function trainable, named `<task>_trial` in Ray."""

    def trial(config: dict[str, Any], data: Any = None) -> None:
        from ray import tune

        reports = 0

        def report(metrics: dict[str, Any], checkpoint_dir: str) -> None:
            nonlocal reports
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(checkpoint_dir))
            reports += 1
            hold_after_report(reports)

        checkpoint = tune.get_checkpoint()
        if checkpoint is None:
            train_fn(config, report, data=data)
            return
        with checkpoint.as_directory() as directory:
            train_fn(config, report, data=data, checkpoint_dir=directory)

    trial.__name__ = f"{task}_trial"
    return trial
