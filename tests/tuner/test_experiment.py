"""What the tuner hands Ray Tune for each phase: the concurrency limit goes to Tune or to
the searcher, never to both and never to neither."""

from __future__ import annotations

from types import SimpleNamespace

from tuner import experiment
from tuner.confirm import confirm_phase


def test_max_concurrent_reaches_every_phase_once():
    optuna = experiment.searcher("optuna", "val_loss", "min", 3, 0)
    assert optuna.max_concurrent == 3  # the searcher's own limit
    assert experiment.concurrency_limit(optuna, 3) is None  # so not Tune's as well

    grid = experiment.searcher("grid", "val_loss", "min", 3, 0)
    assert grid is None and experiment.concurrency_limit(grid, 3) == 3

    # The confirmation's point generator carries no limit: --max-concurrent is Tune's.
    prep = SimpleNamespace(searched=["learning_rate"])
    points = [{"learning_rate": lr, "seed": 1} for lr in (1e-4, 1e-3)]
    phase = confirm_phase(prep, SimpleNamespace(experiment_uri="/tmp/unused"), points)
    assert phase.search_alg is not None
    assert experiment.concurrency_limit(phase.search_alg, 3) == 3
