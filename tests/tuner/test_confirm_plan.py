"""Which configurations a confirmation takes, and which seeds each trains (pure)."""

from __future__ import annotations

import math

from tuner.confirm import pick, plan, plan_line
from tuner.report import TrialRow

MAX_T = 9


def row(name: str, epochs: int, value: float, status: str | None = None) -> TrialRow:
    status = status or ("completed" if epochs >= MAX_T else f"asha at epoch {epochs}")
    return TrialRow(name, name, {"lr": name, "seed": 0}, epochs, value, status, None, [])


# Sorted by the metric, as the summary sorts them: ASHA let only one reach epoch 9.
ROWS = [
    row("a", 1, 0.10),  # best value, but after one epoch: not comparable with epoch 9
    row("b", 3, 0.20),
    row("c", 9, 0.25),
    row("d", 3, 0.22),
    row("e", 1, math.nan),  # never reported the metric
    row("f", 9, 0.05, status="failed"),
]


def test_top_k_by_highest_epoch_then_metric():
    assert [r.name for r in pick(ROWS, 3)] == ["c", "b", "d"]
    assert [r.name for r in pick(ROWS, 4)] == ["c", "b", "d", "a"]
    assert [r.name for r in pick(ROWS, 10)] == ["c", "b", "d", "a"]  # failed / no metric: never


def test_a_configuration_stopped_early_trains_all_its_seeds_in_full():
    points = plan(pick(ROWS, 2), seeds=3, default_seed=0, max_t=MAX_T)
    # c's search run is its seed 0; b's stopped at epoch 3, so seed 0 is trained again.
    assert [(p["lr"], p["seed"]) for p in points] == [
        ("c", 1), ("c", 2), ("b", 0), ("b", 1), ("b", 2),
    ]  # fmt: skip


def test_the_plan_line_names_what_came_from_below_the_full_budget():
    picked = pick(ROWS, 3)
    line = plan_line(picked, 3, 3, 8, MAX_T)
    assert line == (
        "confirm: the top 3 configurations, 3 seeds each: 8 more runs of 9 epochs\n"
        "  taken from below the full budget (all 3 seeds trained anew): b (epoch 3); d (epoch 3)"
    )
    assert plan_line(pick(ROWS, 1), 1, 3, 2, MAX_T).count("\n") == 0
    short = plan_line(pick(ROWS, 5), 5, 2, 7, MAX_T)
    assert short.endswith(
        "only 4 of the 5 asked for: the other trials failed or reported no metric"
    )
