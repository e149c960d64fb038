"""Sweeps end to end through the real CLI: real Ray, real MLflow (SQLite and a server)."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from tests.services import by_phase, cli, kill_group, start_group, sweep_runs, wait_for
from tests.tuner.conftest import SMALL_GRID, TWO_RATES
from trainables.tune_function import HOLD_FILE_ENV


@pytest.mark.sweep
def test_grid_sweep_end_to_end(sweep_args, write_space, tmp_path):
    """The search, then its confirmation (one sweep for both, to keep the suite short; the
    sweep without one is checked on tests/tuner/test_evaluate.py's)."""
    extra = ["--name", "small", "--cpus-per-trial", "1", "--confirm", "3", "--seeds", "2"]
    run = cli("tuner.run", *sweep_args(write_space(SMALL_GRID), *extra))
    assert run.returncode == 0, run.stderr[-3000:]
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client, parents, every = sweep_runs(uri)
    children, confirm = by_phase(every)

    assert len(parents) == 1 and len(children) == 4
    parent = parents[0]
    assert all(c.data.tags["mlflow.parentRunId"] == parent.info.run_id for c in every)
    assert {c.info.status for c in every} == {"FINISHED"}
    assert parent.info.status == "FINISHED"
    names = {c.info.run_name for c in children}
    assert "lr=0.003,wd=0" in names and "lr=1e-05,wd=0.1" in names

    stops = [c.data.tags["vla_tune.stopped"] for c in children]
    assert "completed" in stops and any(s.startswith("asha at epoch") for s in stops)
    for child in children:
        params = child.data.params
        assert params["batch_size"] == "32" and "micro_batch_size" not in params  # by frames
        assert params["precision"] == "fp32" and int(params["trainable_params"]) > 0
        assert params["feature_cache"] == "shared"  # the sweep's frozen image features
        assert params["micro_batch_frames"] == str(32 * 8)
        history = client.get_metric_history(child.info.run_id, "val_loss")
        steps = [m.step for m in history]
        epochs = (
            2
            if child.data.tags["vla_tune.stopped"] == "completed"
            else int(child.data.tags["vla_tune.stopped"].rsplit(" ", 1)[-1])
        )
        assert steps == list(range(1, epochs + 1))
        assert {"train_loss", "mae_linear_x", "direction_acc", "lr"} <= set(child.data.metrics)
        assert child.data.tags["vla_tune.node"] == "127.0.0.1"

    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"results.csv", "best_config.json", "learning_curves.png",
            "parallel_coordinates.png"} <= artifacts  # fmt: skip
    best = [c for c in every if c.data.tags.get("vla_tune.best") == "true"]
    assert len(best) == 1
    best_files = {a.path for a in client.list_artifacts(best[0].info.run_id)}
    assert {"adapter", "trial_config.json"} <= best_files

    # The summary: sorted table, best config, adapter path, the mlflow ui command.
    out = run.stdout
    features = [line for line in out.splitlines() if line.startswith("image features:")]
    assert len(features) == 1 and " frames, " in features[0], out[:3000]
    assert "computed in" in features[0]
    assert "best val_loss" in out and f"mlflow ui --backend-store-uri {uri}" in out
    assert "4 trials:" in out and "stopped early by ASHA, 0 failed" in out
    # Short epochs force Tune's state snapshots often; its warning about that is noise.
    assert "snapshotting has been triggered" not in out + run.stderr
    # Disk: estimated in the header, measured at the end (one checkpoint kept per trial).
    # At most: 4 trials and 3 x 2 confirmation runs (all from below the full budget).
    assert "checkpoints: ~" in out and "up to 16 at once" in out and "10 kept after" in out
    kept = list((tmp_path / "results" / "small").glob("*/checkpoint_*"))
    on_disk = sum(f.stat().st_size for k in kept for f in k.rglob("*") if f.is_file())
    assert len(kept) == 4
    from tuner.disk import human_bytes

    assert f"checkpoints (search): 4 kept, {human_bytes(on_disk)} on disk" in out
    best_json = json.loads((tmp_path / "results" / "small" / "best.json").read_text())
    assert best_json["mlflow_run_id"] == best[0].info.run_id
    assert best_json["trial"] == best[0].info.run_name  # the confirmed best's search trial
    assert best_json["value"] == pytest.approx(best[0].data.metrics["val_loss"])

    exported = cli(
        "tuner.export", "--storage-path", tmp_path / "results", "--out", tmp_path / "export"
    )
    assert exported.returncode == 0, exported.stderr
    config = json.loads((tmp_path / "export" / "config.json").read_text())
    assert config["train_setup"]["lora_enable"] is True
    assert config["learning_rate"] == best_json["config"]["learning_rate"]
    assert (tmp_path / "export" / "adapter" / "adapter_config.json").exists()

    # Under ASHA few trials reach the full budget; the confirmation still takes 3, and each
    # of them ends with the same seeds trained to the full budget.
    assert "confirm: the top 3 configurations, 2 seeds each" in out
    plan = json.loads((tmp_path / "results" / "small" / "confirm.json").read_text())
    assert len(plan["top"]) == 3
    assert best_json["confirmed"]["seeds"] in ([0, 1], [1, 0])
    assert best_json["epochs"] == 2  # the confirmed best's checkpoint trained the full budget
    early = [c for c in children if c.info.run_name in {r.data.params["confirms"] for r in confirm}]
    full = {c.info.run_name for c in children if c.data.metrics.get("epoch") == 2}
    runs = {name: 1 if name in full else 2 for name in {c.info.run_name for c in early}}
    assert len(runs) == 3 and len(confirm) == sum(runs.values())
    # The plan line names what came from below the full budget, exactly when something did.
    below = "taken from below the full budget (all 2 seeds trained anew)" in out
    assert below == any(n == 2 for n in runs.values())


TWO_TRIALS_IN_TURN = TWO_RATES.replace("max_epochs: 2", "max_epochs: 3")


def snapshot_checkpoints(experiment: Path) -> list[str | None]:
    """The checkpoint Ray's snapshot on storage names for each trial (Ray's own reader)."""
    from ray.tune.trainable.metadata import _TrainingRunMetadata

    state = json.loads(max(experiment.glob("experiment_state-*.json")).read_text())
    names = []
    for _, run_metadata in state["trial_data"]:
        manager = _TrainingRunMetadata.from_json_state(run_metadata).checkpoint_manager
        latest = manager.latest_checkpoint_result if manager else None
        names.append(Path(latest.checkpoint.path).name if latest else None)
    return names


def save_snapshot(experiment: Path, saved: Path) -> str | None:
    """Copy the experiment folder's files (Ray's snapshot) to `saved`, replacing an earlier
    copy; the checkpoint the copy names for the first trial."""
    shutil.rmtree(saved, ignore_errors=True)
    shutil.copytree(experiment, saved, ignore=lambda d, names: [
        n for n in names if (Path(d) / n).is_dir()])  # fmt: skip
    return snapshot_checkpoints(saved)[0]


@pytest.mark.sweep
def test_resume_after_the_driver_is_killed_with_a_lagging_snapshot(
    sweep_args, write_space, tmp_path
):
    """Ray uploads its snapshot of a sweep asynchronously, so a killed driver can leave one
    naming the checkpoint before a trial's newest; a trial keeps its latest two while the
    sweep runs, so that one is still there. Made to happen: trial 1 holds after its second
    epoch (the snapshot then names checkpoint_000001; it is saved), then after its third,
    while trial 2 waits its turn; the driver is killed and the saved snapshot put back."""
    experiment = tmp_path / "results" / "killed"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    hold = tmp_path / "hold"
    hold.write_text("1")  # a trial goes on after its first report and holds after its second
    args = sweep_args(
        write_space(TWO_TRIALS_IN_TURN), "--name", "killed", "--max-concurrent", "1",
        "--scheduler", "fifo",
    )  # fmt: skip
    driver = start_group(
        [sys.executable, "-m", "tuner.run", *args], env={**os.environ, HOLD_FILE_ENV: str(hold)}
    )
    saved = tmp_path / "saved-snapshot"
    try:
        # Copied until the copy parses and names it: Ray may be rewriting the file.
        wait_for(driver, lambda: save_snapshot(experiment, saved) == "checkpoint_000001",
                 "a saved snapshot naming the second checkpoint")  # fmt: skip
        hold.write_text("2")  # trial 1 goes on, and holds after its third (last) epoch
        wait_for(driver, lambda: snapshot_checkpoints(experiment)[0] == "checkpoint_000002",
                 "a snapshot naming the third checkpoint")  # fmt: skip
        # While it runs, a trial keeps its latest two checkpoints.
        trial = next(p.parent for p in experiment.glob("*/checkpoint_000002"))
        assert sorted(p.name for p in trial.glob("checkpoint_*")) == [
            "checkpoint_000001", "checkpoint_000002",
        ]  # fmt: skip
    finally:
        kill_group(driver)
    for file in saved.iterdir():
        shutil.copy2(file, experiment / file.name)
    assert snapshot_checkpoints(experiment) == ["checkpoint_000001"]  # trial 2: not yet

    resumed = cli(
        "tuner.run", "--resume", "--name", "killed", "--storage-path", tmp_path / "results"
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "checkpoints (search): 2 kept, " in resumed.stdout
    assert "image features: " in resumed.stdout and ", reused" in resumed.stdout
    client, parents, children = sweep_runs(uri)
    assert len(parents) == 1 and len(children) == 2  # same runs, none duplicated
    assert {c.info.status for c in children} == {"FINISHED"}
    for child in children:
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "val_loss")]
        assert steps == [1, 2, 3], (child.info.run_name, steps)
    # Once the sweep is over, each trial keeps only the checkpoint its result names.
    best = json.loads((experiment / "best.json").read_text())
    kept = sorted(p.relative_to(experiment) for p in experiment.glob("*/checkpoint_*"))
    assert len(kept) == 2 and Path(best["checkpoint"]).relative_to(experiment) in kept


ROBOT_CODE = """
trainable: robot_code
metric: exact_match
mode: max
search: grid
params:
  learning_rate: [5.0e-3, 1.0e-4]
fixed:
  batch_size: 8
  max_epochs: 1
  demo_records: 240
  eval_samples: 16
scheduler: fifo
"""


def robot_code_sweep(space: str, name: str, write_space, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run = cli(
        "tuner.run", "--space", write_space(space), "--storage-path", tmp_path / "results",
        "--mlflow-uri", uri, "--name", name, "--max-epochs", "1",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    return run, uri


@pytest.mark.sweep
def test_robot_code_sweep_runs_through_the_tuner(write_space, tmp_path):
    run, uri = robot_code_sweep(ROBOT_CODE, "code", write_space, tmp_path)
    assert "generated 240 demo commands" in run.stdout
    client, parents, children = sweep_runs(uri)
    assert len(parents) == 1 and len(children) == 2
    for child in children:
        assert {"exact_match", "parse_rate", "val_loss"} <= set(child.data.metrics)
        assert child.data.params["trainable_params"]
    best = json.loads((tmp_path / "results" / "code" / "best.json").read_text())
    assert best["config"]["learning_rate"] == 5e-3  # the rate that learns in one epoch
    assert (tmp_path / "results" / "code").is_dir()


@pytest.mark.sweep
def test_a_tie_at_the_top_is_said_and_tagged_instead_of_a_best(write_space, tmp_path):
    # Two rates too small to learn in one epoch: both trials end at exact_match 0 (on
    # fewer demo commands: nothing is learned either way).
    space = ROBOT_CODE.replace("[5.0e-3, 1.0e-4]", "[1.0e-7, 1.0e-8]")
    space = space.replace("demo_records: 240", "demo_records: 64")
    run, uri = robot_code_sweep(space, "tie", write_space, tmp_path)
    line = "the metric cannot rank the top 2 trials: all at exact_match 0.0000"
    assert f"\n{line}\n" in run.stdout
    _, parents, _ = sweep_runs(uri)
    assert parents[0].data.tags["vla_tune.verdict"] == line
