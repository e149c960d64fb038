"""The end-of-sweep table: sorted trials, their sampled values readable."""

from __future__ import annotations

import math

from tuner.report import TrialRow, table


def row(name: str, config: dict, value: float) -> TrialRow:
    return TrialRow(name, "t", config, 3, value, "completed", None, [])


def test_table_prints_sampled_values_in_four_significant_digits():
    rows = [
        row("a", {"learning_rate": 0.00043851702560851274, "lora_r": 8}, 0.25),
        row("b", {"learning_rate": 0.0021234567, "lora_r": 16}, math.nan),
    ]
    lines = table(rows, "val_loss", ["learning_rate", "lora_r"]).splitlines()
    assert lines[1].split() == ["1", "0.0004385", "8", "3", "0.2500", "completed"]
    assert lines[2].split() == ["2", "0.002123", "16", "3", "nan", "completed"]
