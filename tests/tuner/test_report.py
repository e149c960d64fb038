"""The end-of-sweep table and the benchmark's choice of best follow the space."""

from __future__ import annotations

import math

from bench.sweep import best
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


def test_bench_best_follows_the_mode():
    trials = [{"value": 0.2}, {"value": 0.9}, {"value": 0.5}]
    assert best(trials, "min")["value"] == 0.2  # val_loss
    assert best(trials, "max")["value"] == 0.9  # exact_match
