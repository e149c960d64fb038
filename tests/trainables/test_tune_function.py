"""A trainable runs as a real Ray Tune trial: reports, checkpoints, retries from them."""

from __future__ import annotations

from ray import tune

from trainables.mobile_vla.trainable import train
from trainables.tune_function import tune_function


def test_trial_reports_checkpoints_and_retries_from_them(local_ray, demo_dir, demo_data, tmp_path):
    marker = tmp_path / "crashed_once"

    def crash_once_after_first_epoch(config, report, data=None, checkpoint_dir=None):
        def crashing_report(metrics, directory):
            report(metrics, directory)
            if not marker.exists():
                marker.touch()
                raise RuntimeError("simulated node loss")

        return train(config, crashing_report, data=data, checkpoint_dir=checkpoint_dir)

    trainable = tune.with_parameters(tune_function(crash_once_after_first_epoch), data=demo_data)
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": 1}),
        param_space={
            "data_dir": str(demo_dir),
            "batch_size": 32,
            "max_epochs": 3,
            "learning_rate": 1e-3,
            "torch_threads": 1,
        },
        run_config=tune.RunConfig(
            name="tune_function_test",
            storage_path=str(tmp_path / "results"),
            failure_config=tune.FailureConfig(max_failures=1),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            verbose=0,
        ),
    )
    results = tuner.fit()
    assert marker.exists() and not results.errors
    result = results[0]
    assert result.metrics["epoch"] == 3 and result.metrics["training_iteration"] == 3
    history = result.metrics_dataframe
    # Epoch 1 was reported once: the retry continued from its checkpoint at epoch 2.
    assert sorted(history["epoch"].tolist()) == [1, 2, 3]
    with result.checkpoint.as_directory() as directory:
        from pathlib import Path

        files = {p.name for p in Path(directory).iterdir()}
    assert {"adapter", "policy_head.safetensors", "training_state.pt"} <= files
