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
    half = 4.302653 * 0.001 / math.sqrt(3)  # t(2) x sd of the per-seed differences / sqrt(3)
    assert comparison.diff == pytest.approx(0.020)
    assert comparison.low == pytest.approx(0.020 - half)
    assert comparison.high == pytest.approx(0.020 + half)
    assert comparison.separable
    # The episodes' own spread (0.10 vs 0.30) does not widen the paired interval.
    assert verdict([other, best], "val_loss", "min") == (
        "best lr=1e-04: val_loss 0.2000 +- 0.0100 (3 seeds); "
        "ahead of lr=2e-05 by 0.0200 (10%) [0.0175, 0.0225]"
    )
    assert comparison.relative == pytest.approx(0.1)  # of the best's mean 0.20


def test_a_difference_within_seed_noise_is_not_separable():
    best, other = Runs("a", SEEDS, BEST), Runs("b", SEEDS, shifted([0.02, -0.02, 0.003]))
    comparison = paired(best, other, "min")
    assert comparison.diff == pytest.approx(0.001)
    assert comparison.low < 0 < comparison.high and not comparison.separable
    assert verdict([best, other], "val_loss", "min") == (
        "best a: val_loss 0.2000 +- 0.0100 (3 seeds); "
        "not separable from b: the difference 0.0010 (0.5%) is within seed noise"
    )  # the interval reaches beyond 1% of 0.20 on both sides: it may still matter


def test_a_separable_difference_below_the_practical_threshold_is_a_tie_in_practice():
    best, other = Runs("a", SEEDS, BEST), Runs("b", SEEDS, shifted([2e-5, 2.1e-5, 1.9e-5]))
    comparison = paired(best, other, "min")
    assert comparison.separable  # the seeds agree: beyond seed noise ...
    assert comparison.high < 0.01 * 0.20  # ... and far below 1% of the metric
    tied = "best a: val_loss 0.2000 +- 0.0100 (3 seeds); tied in practice with b: "
    assert verdict([best, other], "val_loss", "min") == (
        tied + "the difference (0.01%) is below 1%"
    )
    assert verdict([best, other], "val_loss", "min", min_effect=0.0) == (
        "best a: val_loss 0.2000 +- 0.0100 (3 seeds); "
        "ahead of b by 2.00e-05 (0.01%) [1.75e-05, 2.25e-05]"
    )  # threshold off: significance alone
    # Not separable, but the whole interval is within 1%: small whichever way it goes.
    noisy = Runs("b", SEEDS, shifted([0.0005, -0.0005, 0.0003]))
    assert not paired(best, noisy, "min").separable
    assert verdict([best, noisy], "val_loss", "min").startswith(tied)
    assert not verdict([best, noisy], "val_loss", "min", min_effect=0.001).startswith(tied)


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
    # Exact quantiles (scipy), not a table: df 11 and 100 fall between any table's rows.
    assert t95(2) == pytest.approx(4.3027, abs=1e-4)
    assert t95(11) == pytest.approx(2.2010, abs=1e-4)
    assert t95(100) == pytest.approx(1.9840, abs=1e-4)
    assert math.isnan(t95(0))
