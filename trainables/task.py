"""What the tuner needs to know about a trainable, in one small record per task.

The tuner never imports a task's internals: it checks configs, loads data once, plans
batches and runs trials through these functions only.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Task name -> module that defines TASK. Imported lazily: a task's imports are heavy.
TASK_MODULES = {
    "mobile_vla": "trainables.mobile_vla.task",
    "robot_code": "trainables.robot_code.task",
}


@dataclass(frozen=True)
class EvaluationRequest:
    """What `python -m tuner.evaluate` asks of a task's `evaluate` hook."""

    flat: dict[str, Any]  # the trial config the policy trained with
    sets: dict[str, Any]  # --set values for the data (e.g. a default instruction)
    folder: Path  # a trial checkpoint, or an export folder when `exported`
    exported: bool
    data_dir: str | None  # evaluate all of it instead of the validation split
    pattern: str | None
    out: Path  # where the plots and summary.json go


@dataclass(frozen=True)
class Task:
    name: str
    # train(config, report, data=None, checkpoint_dir=None): runs one trial
    train: Callable[..., Any]
    # check_config(flat) -> None: raises trainables.config.ConfigError naming the key
    check_config: Callable[[dict[str, Any]], None]
    # load_data(flat) -> data shared by all trials (plain arrays: object-store friendly)
    load_data: Callable[[dict[str, Any]], Any]
    # plan(flat, data) -> derived values: how a step is split (micro_batch_size and
    # accumulation, or the task's own keys), steps_per_epoch, warmup_steps, total_steps;
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
    # the keys of `plan`, and of a trial's logged params, that say how its steps are split
    # (what its batching really uses): the calibration records these
    batch_keys: tuple[str, ...] = ("micro_batch_size", "accumulation")
    # export_config(flat, reference=None, devices=None) -> the configuration in the task's
    # reference format (JSON-able); from `reference` (the file a sweep started from) if given
    export_config: Callable[..., dict[str, Any]] | None = None
    # export_writer(flat) -> what tuner.export writes beside the copied checkpoint (its
    # `write(out, merge) -> lines to print`); checked before anything is written
    export_writer: Callable[[dict[str, Any]], Any] | None = None
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
    # checkpoint_bytes(flat, data) -> the size of one trial checkpoint, estimated before any
    # trial runs (the header's disk estimate; none without it)
    checkpoint_bytes: Callable[[dict[str, Any], Any], int] | None = None
    # evaluate(EvaluationRequest) -> lines to print, having written its files to `out`;
    # bad input is a ValueError whose message is one line
    evaluate: Callable[[EvaluationRequest], list[str]] | None = None
    # load_reference(path) -> the reference config file's contents, for import_config
    # (e.g. a RoboVLMs JSON with its parent chain merged); ValueError names the file
    load_reference: Callable[[str], dict[str, Any]] | None = None
    # val_size(data) -> validation samples in the loaded data (the metric is computed on
    # them; a sweep without any would never see its metric)
    val_size: Callable[[Any], int] | None = None


def get_task(name: str) -> Task:
    if name not in TASK_MODULES:
        raise KeyError(f"unknown trainable '{name}' (known: {', '.join(sorted(TASK_MODULES))})")
    return importlib.import_module(TASK_MODULES[name]).TASK


def lazy(module: str, name: str) -> Callable[..., Any]:
    """`module.name`, imported on first call: a trainable's imports (transformers, peft)
    take seconds, and the tuner checks configs (which need only torch) long before any
    trial runs."""

    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(module), name)(*args, **kwargs)

    return call


def make_task(
    name: str,
    parse_config: Callable[[dict[str, Any]], Any],
    load_dataset: Callable[[Any], Any],
    **fields: Any,
) -> Task:
    """A task whose trial lives in `trainables.<name>.trainable.train` and whose parsed
    config has `data` and `train` sections: checking a config is parsing it, its data is
    `load_dataset(data section)` with `train` and `val` splits, and the batch plan comes
    from the shared loop's keys over the training samples."""

    def check_config(flat: dict[str, Any]) -> None:
        parse_config(flat)

    def load_data(flat: dict[str, Any]) -> Any:
        return load_dataset(parse_config(flat).data)

    def plan(flat: dict[str, Any], data: Any) -> dict[str, Any]:
        # Here, not at the top: importing trainables.task must not cost torch (the tuner
        # imports it before any task); by now parse_config's module has loaded it anyway.
        from trainables.training import plan_batches

        return dataclasses.asdict(plan_batches(parse_config(flat).train, len(data.train)))

    fields.setdefault("val_size", lambda data: len(data.val))
    fields.setdefault("plan", plan)  # a task with more to its plan passes its own
    train = lazy(f"trainables.{name}.trainable", "train")
    return Task(name=name, train=train, check_config=check_config, load_data=load_data, **fields)


def demo_message(created: bool, what: str, where: Any) -> str:
    """What `Task.demo_data` says: whether the demo data was generated now or reused."""
    return f"{'generated' if created else 'using'} {what} in {where}"
