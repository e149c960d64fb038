"""Run a task's `train(config, report, data, checkpoint_dir)` as a Ray Tune trial.

The only place a trainable meets Ray: reports go through `ray.tune.report` with the
epoch's checkpoint directory, and a retried or resumed trial restarts from
`tune.get_checkpoint()`. The dataset comes in through `tune.with_parameters`, so it sits
in the object store once and every trial maps the same memory.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

TrainFn = Callable[..., Any]


def tune_function(train_fn: TrainFn) -> Callable[..., None]:
    def trial(config: dict[str, Any], data: Any = None) -> None:
        from ray import tune

        def report(metrics: dict[str, Any], checkpoint_dir: str) -> None:
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(checkpoint_dir))

        checkpoint = tune.get_checkpoint()
        if checkpoint is None:
            train_fn(config, report, data=data)
            return
        with checkpoint.as_directory() as directory:
            train_fn(config, report, data=data, checkpoint_dir=directory)

    trial.__name__ = f"{train_fn.__module__.rsplit('.', 2)[-2]}_trial"
    return trial
