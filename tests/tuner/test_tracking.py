"""The MLflow callback against a real SQLite store, driven by hand with Ray Tune `Trial`
objects (stub trials: nothing runs) and the results a trainable reports."""

from __future__ import annotations

from mlflow.tracking import MlflowClient
from ray.tune.experiment import Trial

from tuner.tracking import MLflowTrialCallback, SweepTracker


def result(epoch: int, node: str) -> dict:
    """What the trainable reports, plus the bookkeeping Ray adds to every result."""
    return {
        "training_iteration": epoch,
        "val_loss": 1.0 / epoch,
        "node_ip": node,
        "hostname": f"host-{node}",
        "derived": {"steps_per_epoch": 4},
    }


def test_node_tag_follows_a_trial_retried_on_another_node(tmp_path):
    tracking = {
        "uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "experiment": "vla-tune",
        "sweep_id": "sweep-1",
        "artifact_root": tmp_path / "artifacts",
    }
    SweepTracker(**tracking).start_parent("sweep", {"space": "test"}, {})
    trial = Trial("mobile_vla", config={"learning_rate": 1e-3}, trial_id="t_00000", stub=True)

    def callback() -> MLflowTrialCallback:
        return MLflowTrialCallback(tracking, "val_loss", 4, lambda t: "lr=0.001", [])

    def tags() -> tuple[str, str]:
        run_id = SweepTracker(**tracking).trial_run_id(trial.trial_id)
        found = MlflowClient(tracking["uri"]).get_run(run_id).data.tags
        return found["vla_tune.node"], found.get("vla_tune.nodes")

    first = callback()
    first.on_trial_start(0, [trial], trial)
    first.on_trial_result(1, [trial], trial, result(1, "10.0.0.1"))
    first.on_trial_result(2, [trial], trial, result(2, "10.0.0.1"))
    assert tags() == ("10.0.0.1", "10.0.0.1")

    # The node dies; Ray retries the trial from its checkpoint on another node.
    first.on_trial_recover(3, [trial], trial)
    first.on_trial_result(4, [trial], trial, result(3, "10.0.0.2"))
    assert tags() == ("10.0.0.2", "10.0.0.1,10.0.0.2")

    # The driver restarts (--resume): a fresh callback keeps the history from MLflow.
    resumed = callback()
    resumed.on_trial_restore(5, [trial], trial)
    resumed.on_trial_result(6, [trial], trial, result(4, "10.0.0.1"))
    assert tags() == ("10.0.0.1", "10.0.0.1,10.0.0.2,10.0.0.1")
