"""What the tuner needs to know about a trainable, in one small record per task.

The tuner never imports a task's internals: it checks configs, loads data once, plans
batches and runs trials through these functions only.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# Task name -> module that defines TASK. Imported lazily: a task's imports are heavy.
TASK_MODULES = {
    "mobile_vla": "trainables.mobile_vla.task",
    "robot_code": "trainables.robot_code.task",
}


@dataclass(frozen=True)
class Task:
    name: str
    # train(config, report, data=None, checkpoint_dir=None): runs one trial
    train: Callable[..., Any]
    # check_config(flat) -> None: raises trainables.config.ConfigError naming the key
    check_config: Callable[[dict[str, Any]], None]
    # load_data(flat) -> data shared by all trials (plain arrays: object-store friendly)
    load_data: Callable[[dict[str, Any]], Any]
    # plan(flat, data) -> derived values (micro-batch, accumulation, steps per epoch);
    # raises trainables.training.TrainingError for a configuration that cannot train
    plan: Callable[[dict[str, Any], Any], dict[str, Any]]
    # summary(data) -> one line describing the data (printed at sweep start)
    summary: Callable[[Any], str]
    # demo_data(flat) -> (flat with the demo data filled in, message); used when the user
    # names no data
    demo_data: Callable[[dict[str, Any]], tuple[dict[str, Any], str]]
    # precompute(flat, data, device) -> (data with what every trial can share computed
    # once, e.g. frozen image features; one line saying what was done, or None)
    precompute: Callable[[dict[str, Any], Any, str], tuple[Any, str | None]] | None = None
    # export_config(flat, reference=None, devices=None) -> the configuration in the task's
    # reference format (JSON-able); from `reference` (the file a sweep started from) if given
    export_config: Callable[..., dict[str, Any]] | None = None
    # import_config(raw, under, over) -> the reference file's layer of the base config
    # (.flat, .ignored, .notes); `under`/`over` are the layers below and above it
    import_config: Callable[[dict[str, Any], dict[str, Any], dict[str, Any]], Any] | None = None
    # exceptions load_data raises for bad input (reported as one line, exit 2)
    data_errors: tuple[type[Exception], ...] = ()
    # keys a trial config may hold (for validating space files and --set)
    keys: list[str] = field(default_factory=list)
    # keys whose value changes the loaded data: if a space searches one of them, each
    # trial loads its own data instead of sharing one copy
    data_keys: frozenset[str] = frozenset()
    # CLI option -> config key (e.g. --data-dir -> data_dir)
    cli_keys: dict[str, str] = field(default_factory=dict)
    # the default of every key that has one (e.g. max_epochs when a space sets none)
    defaults: dict[str, Any] = field(default_factory=dict)
    # val_size(data) -> validation samples in the loaded data (the metric is computed on
    # them; a sweep without any would never see its metric)
    val_size: Callable[[Any], int] | None = None


def get_task(name: str) -> Task:
    if name not in TASK_MODULES:
        raise KeyError(f"unknown trainable '{name}' (known: {', '.join(sorted(TASK_MODULES))})")
    return importlib.import_module(TASK_MODULES[name]).TASK
