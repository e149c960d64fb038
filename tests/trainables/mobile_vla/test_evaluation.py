"""Evaluation scores beside their baselines, on constructed episodes (exact numbers)."""

from __future__ import annotations

import numpy as np
import pytest

from trainables.mobile_vla.evaluation import EpisodeResult, summarize, table

NAMES = ("linear_x", "linear_y")
BOUND = 1.15


def episode(name: str, commanded: list[list[float]], predicted: list[list[float]]):
    chunk = np.asarray(predicted, dtype=np.float32)[:, None, :]  # row 0 of a 1-step chunk
    return EpisodeResult(name, "go", np.asarray(commanded, dtype=np.float32), chunk)


# 4 frames forward, 2 stopped; a flat policy that always says "forward at 0.9".
COMMANDED = [[1.15, 0.0]] * 4 + [[0.0, 0.0]] * 2
FLAT = [[0.9, 0.0]] * 6


def test_a_flat_policy_scores_its_baseline():
    summary = summarize([episode("a.h5", COMMANDED, FLAT)], NAMES, BOUND)
    overall, base = summary["overall"], summary["overall"]["baseline"]
    # The most frequent direction is "forward" (4 of 6 frames; linear_y is always 0).
    assert summary["baseline"]["direction"] == "forward"
    assert base["direction_acc"] == pytest.approx((4 + 6) / 12)
    assert overall["direction_acc"] == base["direction_acc"]  # the flat policy: no better
    # The mean command is 4 x 1.15 / 6 forward: its MAE is the baseline's.
    mean = 4 * 1.15 / 6
    assert summary["baseline"]["mean"]["linear_x"] == pytest.approx(mean)
    assert base["mae"]["linear_x"] == pytest.approx((4 * (1.15 - mean) + 2 * mean) / 6)
    assert overall["mae"]["linear_x"] == pytest.approx((4 * 0.25 + 2 * 0.9) / 6)


def test_a_policy_that_follows_beats_the_baseline_and_the_table_shows_both():
    results = [
        episode("a.h5", COMMANDED[:3], [[1.1, 0.0]] * 3),
        episode("b.h5", COMMANDED[3:], [[1.1, 0.0], [0.01, 0.0], [0.0, 0.0]]),
    ]
    summary = summarize(results, NAMES, BOUND)
    assert summary["overall"]["direction_acc"] == 1.0
    # Per episode, the baseline is the one fitted to all frames: "forward", 4 of 6 overall.
    assert [e["baseline"]["direction_acc"] for e in summary["episodes"]] == [
        1.0,
        pytest.approx(4 / 6),
    ]
    text = table(summary)
    assert "dir_acc (base)" in text and "1.000 (0.833)" in text
    assert "always 'forward', the most frequent direction" in text
