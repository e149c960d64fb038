"""The end-of-sweep table: sorted trials, their sampled values readable."""

from __future__ import annotations

import math

from tuner.report import TrialRow, log_scaled_keys, table
from tuner.spaces import Space, load_space


def space_over(write_space, search: str, params: dict[str, str]) -> Space:
    """A mobile_vla space searching `params` (key: YAML value)."""
    lines = ["trainable: mobile_vla", "metric: val_loss", "mode: min", f"search: {search}"]
    lines += [] if search == "grid" else ["num_samples: 2"]
    lines += ["params:", *(f"  {key}: {value}" for key, value in params.items())]
    return load_space(str(write_space("\n".join(lines) + "\n")))


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


def test_learning_rate_axis_is_logarithmic_with_the_grid_values_as_ticks(write_space, tmp_path):
    from tuner.report import axis_position, axis_ticks, plot_parallel_coordinates

    space = space_over(
        write_space,
        "grid",
        {"learning_rate": "[1.0e-5, 2.0e-5, 1.0e-4]", "weight_decay": "[0.0, 0.1]",
         "lora_r": "[8, 16]"},
    )  # fmt: skip
    assert log_scaled_keys(space) == {"learning_rate"}  # weight decay has 0: linear
    grid = [1e-5, 2e-5, 1e-4]
    # On a linear axis 2e-5 sits at 0.11, next to 1e-5; by decade it is log10(2) up.
    assert math.isclose(axis_position(2e-5, grid, log=True), math.log10(2))
    assert math.isclose(axis_position(2e-5, grid, log=False), 1 / 9)
    assert [label for _, label in axis_ticks(grid, log=True)] == ["1e-05", "2e-05", "0.0001"]

    rows = [row(f"t{i}", {"learning_rate": lr, "weight_decay": 0.0, "lora_r": 8}, 0.1 * i)
            for i, lr in enumerate(grid)]  # fmt: skip
    path = tmp_path / "parallel.png"
    plot_parallel_coordinates(
        rows,
        "val_loss",
        "min",
        ["learning_rate", "weight_decay", "lora_r"],
        path,
        {"learning_rate"},
    )
    assert path.stat().st_size > 10_000


def test_the_best_trial_is_drawn_last_on_top():
    from tuner.report import drawing_order

    assert drawing_order([0.3, 0.1, 0.2], "min") == [0, 2, 1]
    assert drawing_order([0.3, 0.1, 0.2], "max") == [1, 2, 0]


def test_loguniform_parameters_are_log_scaled(write_space):
    space = space_over(
        write_space,
        "random",
        {"learning_rate": "{loguniform: [1.0e-5, 1.0e-3]}",
         "lora_dropout": "{uniform: [0.0, 0.1]}", "weight_decay": "[0.01, 0.1]"},
    )  # fmt: skip
    assert log_scaled_keys(space) == {"learning_rate", "weight_decay"}
