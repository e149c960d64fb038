"""The confirmation statistics on constructed per-episode losses."""

from __future__ import annotations

import math

import pytest

from tuner.verdict import Runs, config_stats, paired, search_tie, t95, verdict

SEEDS = [0, 1, 2]
# Three seeds x two validation episodes; the second episode is harder than the first.
BEST = [[0.10, 0.30], [0.11, 0.31], [0.09, 0.29]]


def shifted(per_seed: list[float]) -> list[list[float]]:
    """BEST with each seed's episodes moved by that seed's difference."""
    return [[v + d for v in episodes] for episodes, d in zip(BEST, per_seed, strict=True)]


def test_mean_and_spread_over_seeds():
    stats = config_stats(Runs("a", SEEDS, BEST))
    assert stats.values == pytest.approx([0.20, 0.21, 0.19])
    assert stats.mean == pytest.approx(0.20)
    assert stats.sd == pytest.approx(0.01)
    assert stats.n == 3


def test_a_clear_winner_is_ahead_with_a_t_interval():
    best, other = (
        Runs("lr=1e-04", SEEDS, BEST),
        Runs("lr=2e-05", SEEDS, shifted([0.020, 0.021, 0.019])),
    )
    comparison = paired(best, other, "min")
    half = 4.303 * 0.001 / math.sqrt(3)  # t(2) x sd of the per-seed differences / sqrt(3)
    assert comparison.diff == pytest.approx(0.020)
    assert comparison.low == pytest.approx(0.020 - half)
    assert comparison.high == pytest.approx(0.020 + half)
    assert comparison.separable
    # The episodes' own spread (0.10 vs 0.30) does not widen the paired interval.
    assert verdict([other, best], "val_loss", "min") == (
        "best lr=1e-04: val_loss 0.2000 +- 0.0100 (3 seeds); "
        "ahead of lr=2e-05 by 0.02 [0.0175, 0.0225]"
    )


def test_a_difference_within_seed_noise_is_not_separable():
    best, other = Runs("a", SEEDS, BEST), Runs("b", SEEDS, shifted([0.02, -0.02, 0.003]))
    comparison = paired(best, other, "min")
    assert comparison.diff == pytest.approx(0.001)
    assert comparison.low < 0 < comparison.high and not comparison.separable
    assert verdict([best, other], "val_loss", "min") == (
        "best a: val_loss 0.2000 +- 0.0100 (3 seeds); "
        "not separable from b: the difference is within seed noise"
    )


def test_mode_max_and_pairing_by_seed():
    low, high = Runs("low", [5, 7], [[0.5], [0.6]]), Runs("high", [7, 5], [[0.9], [0.7]])
    comparison = paired(high, low, "max")
    assert comparison.diff == pytest.approx(0.25)  # seed 5: 0.7 - 0.5, seed 7: 0.9 - 0.6
    assert comparison.seeds == 2
    assert verdict([low, high], "acc", "max").startswith("best high: acc 0.8000")


def test_all_equal_values_cannot_rank_and_a_tied_search_says_so():
    zeros = [[0.0], [0.0]]
    line = verdict([Runs("a", [0, 1], zeros), Runs("b", [0, 1], zeros)], "exact_match", "max")
    assert line == (
        "the metric cannot rank them: 2 configurations all at exact_match 0.0000 on every seed"
    )
    assert search_tie([0.0, 0.0, 0.0, 0.1], "exact_match") == (
        "the metric cannot rank the top 3 trials: all at exact_match 0.0000"
    )
    assert search_tie([0.2, 0.3], "val_loss") is None


def test_t_quantiles():
    assert t95(2) == 4.303 and t95(11) == 2.228 and t95(100) == 1.96
    assert math.isnan(t95(0))
