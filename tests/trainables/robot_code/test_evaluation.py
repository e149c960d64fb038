"""Exact match, parse rate and their per-category breakdown on hand-made predictions."""

from __future__ import annotations

import numpy as np
import pytest

from trainables.robot_code.evaluation import EvalConfig, eval_subset, metric_suffix, parses, score


def test_scores_overall_and_per_category():
    references = [
        "robot.move_forward(distance=3.0, speed=1.0)",
        "robot.turn_left(angle=90.0)",
        'robot.pick_up(object="cube", color="red")',
        "robot.stop()",
    ]
    predictions = [
        " robot.move_forward(distance=3.0, speed=1.0)\n",  # outer whitespace does not count
        "robot.turn_left(angle=90)",  # parses, but is another program
        'robot.pick_up(object="cube", color="red"',  # unbalanced: neither
        "robot.stop()",
    ]
    categories = ["movement", "turning", "Pick & Place", ""]
    metrics = score(predictions, references, categories)
    assert metrics == {
        "exact_match": 0.5,
        "parse_rate": 0.75,
        "exact_match_movement": 1.0,
        "parse_rate_movement": 1.0,
        "exact_match_turning": 0.0,
        "parse_rate_turning": 1.0,
        "exact_match_pick_place": 0.0,
        "parse_rate_pick_place": 0.0,
        "exact_match_uncategorized": 1.0,
        "parse_rate_uncategorized": 1.0,
    }


@pytest.mark.parametrize(
    ("code", "ok"),
    [
        ("robot.a()\nrobot.b(x=1)", True),
        ("  robot.a()\n", True),  # stripped, as exact match strips
        (" \n", False),  # ast.parse accepts an empty module: no program for a robot
        ("robot.a(", False),
        ("robot .a(x=)", False),
        ("a\x00b", False),  # ValueError, not SyntaxError
    ],
)
def test_parses(code, ok):
    assert parses(code) is ok


def test_metric_suffix():
    assert metric_suffix("multi-step Sequence") == "multi_step_sequence"
    assert metric_suffix("") == metric_suffix("???") == "uncategorized"


def test_eval_subset_is_fixed_and_spread():
    subset = eval_subset(1000, 64, seed=0)
    assert len(subset) == 64 and np.array_equal(subset, eval_subset(1000, 64, seed=0))
    assert subset.max() > 500  # not just the head of a file sorted by category
    assert np.array_equal(eval_subset(10, 64, seed=0), np.arange(10))
    assert np.array_equal(eval_subset(10, 0, seed=0), np.arange(10))


def test_eval_config_checks():
    with pytest.raises(ValueError, match="eval_samples: must be an integer >= 0"):
        EvalConfig(eval_samples=-1)
    with pytest.raises(ValueError, match="eval_batch_size: must be an integer >= 1"):
        EvalConfig(eval_batch_size=0)
