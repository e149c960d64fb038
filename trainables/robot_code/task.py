"""The robot-code trainable as a tuner task (see trainables/task.py).

Its batch plan counts the training records; records the tokenizer later finds to hold
no response token within max_length are left out, so a trial may plan fewer.
"""

from __future__ import annotations

from typing import Any

from trainables.config import defaults_of, keys_of
from trainables.robot_code.dataset import DataError, RobotCodeData, load_dataset
from trainables.robot_code.demo_data import ensure_demo_data
from trainables.robot_code.trial_config import DATA_KEYS, SECTIONS, parse_config
from trainables.task import demo_message, make_task


def summary(data: RobotCodeData) -> str:
    categories = sorted({c or "uncategorized" for c in data.train.categories})
    return (
        f"{len(data.train)} training and {len(data.val)} validation records "
        f"({', '.join(categories)}) from {data.source}"
    )


def demo_data(flat: dict[str, Any]) -> tuple[dict[str, Any], str]:
    records = parse_config(flat).data.demo_records
    path, created = ensure_demo_data(records)
    message = demo_message(created, f"{records} demo commands", path)
    return {**flat, "data_path": str(path)}, message


TASK = make_task(
    "robot_code",
    parse_config,
    load_dataset,  # without data_path: the demo set, generated once into the cache
    keys=keys_of(*SECTIONS.values()),
    defaults=defaults_of(*SECTIONS.values()),
    data_keys=DATA_KEYS,
    # --data-dir names the records file here (a JSON list or .jsonl), not a folder.
    cli_keys={"data_dir": "data_path", "model": "model"},
    data_errors=(DataError,),
    summary=summary,
    demo_data=demo_data,
)
