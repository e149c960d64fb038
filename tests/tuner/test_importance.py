"""What mattered: fANOVA finds the one hyperparameter a synthetic result depends on, the
per-value means, the reasons to skip, and the params and plots on a real MLflow run."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import numpy as np
import pytest

from tuner.importance import analyse, compared_values, report_importance
from tuner.report import TrialRow
from tuner.spaces import load_space
from tuner.tracking import SweepTracker

GRID = """
trainable: mobile_vla
metric: val_loss
mode: min
search: grid
params:
  learning_rate: [1.0e-4, 2.0e-5, 1.0e-5]
  weight_decay: [0.0, 0.1]
  batch_size: [128, 256, 512]
"""


def rows_depending_on_lr(epochs=lambda i: 1) -> list[TrialRow]:
    """18 trials whose val_loss depends on the learning rate only (plus a little noise)."""
    rng = np.random.default_rng(0)
    rows = []
    grid = itertools.product([1e-4, 2e-5, 1e-5], [0.0, 0.1], [128, 256, 512])
    for i, (lr, wd, bs) in enumerate(grid):
        base = {1e-4: 0.2, 2e-5: 0.3, 1e-5: 0.5}[lr]
        history = [(e, base + rng.normal(0, 0.005) - 0.01 * e) for e in range(1, epochs(i) + 1)]
        config = {"learning_rate": lr, "weight_decay": wd, "batch_size": bs}
        value = history[-1][1]
        rows.append(TrialRow(f"t{i}", str(i), config, epochs(i), value, "x", None, history))
    return rows


SEARCHED = ["learning_rate", "weight_decay", "batch_size"]


def test_fanova_finds_the_parameter_the_result_depends_on():
    result = analyse(rows_depending_on_lr(), "val_loss", "min", SEARCHED, {"learning_rate"})
    assert list(result.importances)[0] == "learning_rate"
    assert result.importances["learning_rate"] > 0.9
    assert sum(result.importances.values()) == pytest.approx(1.0)
    means = dict(result.means["learning_rate"])
    assert means[1e-4] == pytest.approx(0.19, abs=0.005)  # 0.2 - 0.01 at epoch 1
    assert means[1e-5] == pytest.approx(0.49, abs=0.005)
    assert [v for v, _ in result.means["batch_size"]] == [128, 256, 512]
    block = result.block()
    assert block.startswith("what mattered (fANOVA over 18 trials at epoch 1, val_loss")
    assert block.splitlines()[1].split()[0] == "learning_rate"


def test_trials_are_compared_at_the_highest_epoch_every_trial_reached():
    rows = rows_depending_on_lr(epochs=lambda i: 3 if i % 2 else 2)
    epoch, values = compared_values(rows)
    assert epoch == 2 and len(values) == 18
    assert values[0][1] == rows[0].history[1][1]  # epoch 2's value, not the last


def test_too_few_trials_or_values_are_said():
    rows = rows_depending_on_lr()
    assert "only 3 trials" in analyse(rows[:3], "val_loss", "min", SEARCHED, set())
    same = [r for r in rows if r.config["learning_rate"] == 1e-4 and r.config["batch_size"] == 128]
    same += same  # 4 trials, all at one value of each
    assert "fewer than 2 values" in analyse(same, "val_loss", "min", ["learning_rate"], set())


def test_params_and_plots_land_on_the_parent_run(write_space, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = SweepTracker(uri, "vla-tune", "sweep1", None)
    parent = tracker.start_parent("s", params={}, tags={})
    prep = SimpleNamespace(space=load_space(str(write_space(GRID))), searched=SEARCHED)
    block = report_importance(prep, rows_depending_on_lr(), tracker, parent)
    assert block.startswith("what mattered")
    run = tracker.client.get_run(parent)
    assert float(run.data.params["importance.learning_rate"]) > 0.9
    assert {"importance.weight_decay", "importance.batch_size"} <= set(run.data.params)
    assert run.data.params["importance.epoch"] == "1"
    artifacts = {a.path for a in tracker.client.list_artifacts(parent)}
    assert {"importance.png", "marginals.png"} <= artifacts
