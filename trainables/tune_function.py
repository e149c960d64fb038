"""Run a task's `train(config, report, data, checkpoint_dir)` as a Ray Tune trial.

The only place a trainable meets Ray: reports go through `ray.tune.report` with the
epoch's checkpoint directory, and a retried or resumed trial restarts from
`tune.get_checkpoint()`. The dataset comes in through `tune.with_parameters`, so it sits
in the object store once and every trial maps the same memory.

Failure-test hook (like Ray's own `RAY_testing_*` variables; never set it in a real run):
when `VLA_TUNE_HOLD_FILE` is set in a trial's process (Ray's worker processes inherit the
environment of the node's `ray start`), the trial waits after each report, its checkpoint
already persisted, until that file exists. A test can so keep a trial on a node it is
about to kill, and keep a node's CPU busy, without depending on timing.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

TrainFn = Callable[..., Any]
HOLD_FILE_ENV = "VLA_TUNE_HOLD_FILE"


def hold_while_missing(poll_s: float = 0.2) -> None:
    """Wait until the file named by $VLA_TUNE_HOLD_FILE exists; return at once if unset."""
    path = os.environ.get(HOLD_FILE_ENV)
    if not path:
        return
    while not os.path.exists(path):
        time.sleep(poll_s)


def tune_function(train_fn: TrainFn) -> Callable[..., None]:
    def trial(config: dict[str, Any], data: Any = None) -> None:
        from ray import tune

        def report(metrics: dict[str, Any], checkpoint_dir: str) -> None:
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(checkpoint_dir))
            hold_while_missing()

        checkpoint = tune.get_checkpoint()
        if checkpoint is None:
            train_fn(config, report, data=data)
            return
        with checkpoint.as_directory() as directory:
            train_fn(config, report, data=data, checkpoint_dir=directory)

    trial.__name__ = f"{train_fn.__module__.rsplit('.', 2)[-2]}_trial"
    return trial
