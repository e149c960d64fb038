"""Command -> code records from JSON files, checked, split, and held as plain strings.

A data file is a JSON list of objects (or JSON Lines, one object per line, for `.jsonl`):

    [{"input": "move forward 3 meters",
      "output": "robot.move_forward(distance=3.0, speed=1.0)",
      "category": "movement"}, ...]

`category` is optional; other fields are ignored (datasets often carry ids or notes).
Every record is checked before any trial starts, and each problem is named with its file
and record index (0-based, as `jq '.[3]'` counts; JSON Lines: 1-based line numbers, as an
editor counts). The result holds only strings, so Ray can share one copy with all trials.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

FIELDS = ("input", "output")
OPTIONAL_FIELDS = ("category",)
UNCATEGORIZED = ""


@dataclass
class DataConfig:
    data_path: str = ""  # JSON list or .jsonl; empty: the demo commands (generated once)
    val_path: str = ""  # separate validation file; empty: split data_path by val_ratio
    val_ratio: float = 0.1
    split_seed: int = 0
    demo_records: int = 2000  # size of the demo set when data_path is empty

    def __post_init__(self) -> None:
        if not 0 <= self.val_ratio < 1:
            raise ValueError(f"val_ratio: must be in [0, 1), got {self.val_ratio}")
        if self.val_path and not self.data_path:
            raise ValueError("val_path: given without data_path (the training file)")
        if isinstance(self.demo_records, bool) or self.demo_records < 2:
            raise ValueError(f"demo_records: must be >= 2, got {self.demo_records}")


class DataError(ValueError):
    """Unusable data. The message is one line (the first problem and how many more);
    `problems` holds every one of them."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        more = len(problems) - 1
        suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
        super().__init__(problems[0] + suffix)


@dataclass
class Records:
    """Parallel lists, one entry per record; category "" when the record has none."""

    inputs: list[str]
    outputs: list[str]
    categories: list[str]

    def __len__(self) -> int:
        return len(self.inputs)

    def take(self, indices: list[int] | np.ndarray) -> Records:
        return Records(
            inputs=[self.inputs[i] for i in indices],
            outputs=[self.outputs[i] for i in indices],
            categories=[self.categories[i] for i in indices],
        )


@dataclass
class RobotCodeData:
    train: Records
    val: Records
    source: str  # where the records came from, for the sweep's opening summary


def read_json(path: Path) -> list[tuple[str, Any]]:
    """(label, record) pairs from a JSON list or a JSON Lines file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError([f"{path}: file does not exist"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError([f"{path}: cannot read ({exc})"]) from None
    if path.suffix == ".jsonl":
        return read_json_lines(path, text)
    try:
        loaded = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError([f"{path}: not valid JSON ({exc})"]) from None
    if not isinstance(loaded, list):
        raise DataError([f"{path}: expected a JSON list of records, got {json_type(loaded)}"])
    return [(f"record {i}", record) for i, record in enumerate(loaded)]


def read_json_lines(path: Path, text: str) -> list[tuple[str, Any]]:
    pairs, problems = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            pairs.append((f"line {number}", json.loads(line)))
        except json.JSONDecodeError as exc:
            problems.append(f"{path}: line {number}: not valid JSON ({exc})")
    if problems:
        raise DataError(problems)
    return pairs


def json_type(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return "a number"
    return names.get(type(value), type(value).__name__)


def check_record(record: Any) -> str | None:
    """What is wrong with one record, or None."""
    if not isinstance(record, dict):
        return f"expected an object with 'input' and 'output', got {json_type(record)}"
    for key in FIELDS:
        if key not in record:
            return f"missing '{key}'"
    for key in FIELDS + OPTIONAL_FIELDS:
        if key not in record:
            continue
        value = record[key]
        if not isinstance(value, str):
            return f"'{key}' must be a string, got {json_type(value)}"
        if not value.strip():
            return f"'{key}' is empty"
    return None


def load_records(path: str | Path) -> Records:
    """Every record of one file, or a DataError naming each bad one."""
    path = Path(path).expanduser()
    pairs = read_json(path)
    if not pairs:
        raise DataError([f"{path}: no records"])
    problems = []
    for label, record in pairs:
        problem = check_record(record)
        if problem:
            problems.append(f"{path}: {label}: {problem}")
    if problems:
        raise DataError(problems)
    records = [record for _, record in pairs]
    return Records(
        inputs=[r["input"] for r in records],
        outputs=[r["output"] for r in records],
        categories=[r.get("category", UNCATEGORIZED) for r in records],
    )


def split_records(records: Records, val_ratio: float, seed: int) -> tuple[Records, Records]:
    """A deterministic shuffle, then the first round(val_ratio x N) records validate
    (at least one when val_ratio > 0; at least one record always trains)."""
    order = np.random.default_rng(seed).permutation(len(records))
    n_val = max(1, round(val_ratio * len(records))) if val_ratio > 0 else 0
    if n_val >= len(records):
        raise DataError(
            [f"{len(records)} records cannot be split into training and validation records"]
        )
    return records.take(np.sort(order[n_val:])), records.take(np.sort(order[:n_val]))


def load_dataset(cfg: DataConfig) -> RobotCodeData:
    """Records from cfg.data_path (and cfg.val_path), or the cached demo set."""
    source = cfg.data_path
    if not source:
        from trainables.robot_code.demo_data import ensure_demo_data

        source = str(ensure_demo_data(cfg.demo_records)[0])
    records = load_records(source)
    if cfg.val_path:
        return RobotCodeData(
            train=records, val=load_records(cfg.val_path), source=f"{source} + {cfg.val_path}"
        )
    train, val = split_records(records, cfg.val_ratio, cfg.split_seed)
    return RobotCodeData(train=train, val=val, source=source)
