"""bench/sweep.py compares ASHA with the full grid by the space's own metric and mode."""

from __future__ import annotations

from bench.sweep import best


def test_bench_best_follows_the_mode():
    trials = [{"value": 0.2}, {"value": 0.9}, {"value": 0.5}]
    assert best(trials, "min")["value"] == 0.2  # val_loss
    assert best(trials, "max")["value"] == 0.9  # exact_match
