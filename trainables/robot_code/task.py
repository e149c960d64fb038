"""The robot-code trainable as a tuner task (see trainables/task.py)."""

from __future__ import annotations

import dataclasses
from typing import Any

from trainables.robot_code.dataset import DataError, RobotCodeData
from trainables.robot_code.demo_data import ensure_demo_data
from trainables.robot_code.trial_config import (
    DATA_KEYS,
    config_defaults,
    config_keys,
    parse_config,
)
from trainables.task import Task
from trainables.training import plan_batches


def check_config(flat: dict[str, Any]) -> None:
    parse_config(flat)


def load_data(flat: dict[str, Any]) -> RobotCodeData:
    from trainables.robot_code.trainable import load_data as load

    return load(flat)


def train(config: dict[str, Any], report, data=None, checkpoint_dir=None) -> dict[str, Any]:
    """Imported on first use: the driver checks configs without transformers and peft."""
    from trainables.robot_code.trainable import train as run

    return run(config, report, data=data, checkpoint_dir=checkpoint_dir)


def plan(flat: dict[str, Any], data: RobotCodeData) -> dict[str, Any]:
    """Batch plan over the training records (records the tokenizer later finds to hold
    no response token within max_length are left out, so a trial may plan fewer)."""
    return dataclasses.asdict(plan_batches(parse_config(flat).train, len(data.train)))


def summary(data: RobotCodeData) -> str:
    categories = sorted({c or "uncategorized" for c in data.train.categories})
    return (
        f"{len(data.train)} training and {len(data.val)} validation records "
        f"({', '.join(categories)}) from {data.source}"
    )


def demo_data(flat: dict[str, Any]) -> tuple[dict[str, Any], str]:
    records = parse_config(flat).data.demo_records
    path, created = ensure_demo_data(records)
    verb = "generated" if created else "using"
    return {**flat, "data_path": str(path)}, f"{verb} {records} demo commands in {path}"


TASK = Task(
    name="robot_code",
    train=train,
    check_config=check_config,
    load_data=load_data,
    plan=plan,
    summary=summary,
    demo_data=demo_data,
    keys=config_keys(),
    data_keys=DATA_KEYS,
    data_errors=(DataError,),
    # --data-dir names the records file here (a JSON list or .jsonl), not a folder.
    cli_keys={"data_dir": "data_path", "model": "model"},
    defaults=config_defaults(),
    val_size=lambda data: len(data.val),
)
