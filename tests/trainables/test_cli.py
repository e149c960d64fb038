"""The line a trainable's standalone CLI prints per epoch (`trainables.cli.epoch_line`)."""

from __future__ import annotations

import pytest

from trainables.cli import epoch_line


@pytest.mark.parametrize(
    ("samples_per_s", "shown"),
    [(0.04237, "0.0424"), (0.3149, "0.315"), (7.891, "7.89"), (56.78, "56.8"), (1234.6, "1235")],
)
def test_the_line_shows_a_slow_models_rate_with_significant_digits(samples_per_s, shown):
    metrics = {"epoch": 1, "train_loss": 0.5, "lr": 1e-4, "samples_per_s": samples_per_s}
    line = epoch_line(metrics, 3, lambda m: [])
    assert line == f"epoch 1/3  train_loss 0.5000  lr 1.00e-04  {shown} samples/s"
