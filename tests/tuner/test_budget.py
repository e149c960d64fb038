"""--time-budget: Tune's own time budget ends the sweep cleanly, --resume finishes it."""

from __future__ import annotations

import json
import os

import pytest

from tests.services import cli, mlflow_server, sweep_runs
from tests.tuner.conftest import SMALL_GRID
from trainables.tune_function import HOLD_FILE_ENV
from tuner.budget import AFTER_CHECKPOINTS_ENV, BUDGET_FILE, parse_duration
from tuner.spaces import SpaceError, load_space


def test_parse_duration():
    assert parse_duration("2h") == 7200 and parse_duration("1h30m") == 5400
    assert parse_duration("90") == 90 and parse_duration("45s") == 45
    for bad in ("2 weeks", "h", "0", "-5m"):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_a_space_sets_a_budget(write_space):
    space = load_space(str(write_space(SMALL_GRID + "time_budget: 90m\n")))
    assert space.time_budget == 5400
    with pytest.raises(SpaceError, match="time_budget: expected a duration"):
        load_space(str(write_space(SMALL_GRID + "time_budget: soon\n", "bad.yaml")))


# The grid's four points drawn by Optuna: 4 samples, one at a time. Optuna, because its
# resume is the harder one (the searcher's state comes back, and it must draw only the
# samples not drawn yet); a grid's points are resumed in tests/tuner/test_sweep.py.
OPTUNA = SMALL_GRID.replace("search: grid", "search: optuna\nnum_samples: 4").replace(
    "learning_rate: [3.0e-3, 1.0e-5]", "learning_rate: {loguniform: [1.0e-5, 3.0e-3]}"
)


@pytest.mark.sweep
def test_the_budget_stops_every_trial_and_resume_finishes_them(sweep_args, write_space, tmp_path):
    """Made to run out: the first two trials hold after their first epoch while the
    others wait their turn, and the budget's clock starts only once Tune has registered
    both checkpoints (tuner.budget's test hook), so the one-second budget ends the sweep
    with all four trials unfinished, two held at their checkpoints, whatever the
    machine's speed. The resume (no budget, no hold) trains exactly what is left: the
    samples Optuna had not drawn. The sweep logs to a real MLflow server, as a cluster's
    sweeps do."""
    with mlflow_server(tmp_path) as uri:
        budget_then_resume(sweep_args, write_space, tmp_path, OPTUNA, uri)


def budget_then_resume(sweep_args, write_space, tmp_path, space, uri):
    hold = tmp_path / "hold"  # missing: a trial waits after each report
    args = sweep_args(
        write_space(space), "--name", "budget", "--max-concurrent", "2",
        "--scheduler", "fifo", "--time-budget", "1s", "--mlflow-uri", uri,
    )  # fmt: skip
    hooks = {HOLD_FILE_ENV: str(hold), AFTER_CHECKPOINTS_ENV: "2"}
    run = cli("tuner.run", *args, env={**os.environ, **hooks}, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "the time budget ended the sweep after" in run.stdout, run.stdout[-3000:]
    assert "with 4 trials left (2 stopped at their last checkpoint" in run.stdout
    assert "--resume --name budget" in run.stdout and "without a budget" in run.stdout
    experiment = tmp_path / "results" / "budget"
    assert len(json.loads((experiment / BUDGET_FILE).read_text())["cut"]) == 2  # those started
    assert (tmp_path / "hold.waiting").exists()  # they reported and held before the end
    assert len(list(experiment.glob("*/checkpoint_000000"))) == 2  # those it resumes from
    assert not list(experiment.glob("*/checkpoint_000001"))  # nothing past the hold

    resumed = cli(
        "tuner.run", "--resume", "--name", "budget", "--storage-path", tmp_path / "results",
        timeout=600,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "the time budget ended" not in resumed.stdout
    assert "4 trials: 4 completed" in resumed.stdout
    client, parents, children = sweep_runs(uri)
    assert len(parents) == 1 and len(children) == 4  # the same runs, continued
    for child in children:
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "val_loss")]
        assert steps == [1, 2], (child.info.run_name, steps)
    metrics = parents[0].data.metrics
    assert metrics["wall_s"] > 0 and metrics["forecast_s"] > 0
    assert "against the forecast" in resumed.stdout
    # What mattered, over the four trials at their common last epoch, on the parent run.
    assert "what mattered (fANOVA over 4 trials at epoch 2, val_loss" in resumed.stdout
    params = parents[0].data.params
    assert {"importance.learning_rate", "importance.weight_decay"} <= set(params)
    artifacts = {a.path for a in client.list_artifacts(parents[0].info.run_id)}
    assert {"importance.png", "marginals.png"} <= artifacts
    assert "will be ignored" not in run.stderr + resumed.stderr  # one concurrency limit
    # Four samples drawn from the ranges, each trained in full.
    rates = {float(c.data.params["learning_rate"]) for c in children}
    assert len(rates) == 4 and all(1e-5 <= r <= 3e-3 for r in rates)
    assert {c.data.params["weight_decay"] for c in children} <= {"0.0", "0.1"}
    assert {c.data.tags["vla_tune.stopped"] for c in children} == {"completed"}
