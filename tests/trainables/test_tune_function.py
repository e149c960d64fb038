"""A trainable runs as a real Ray Tune trial: reports, checkpoints, retries from them."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from ray import tune

from tests.services import isolated_env
from trainables.mobile_vla.trainable import train
from trainables.tune_function import HOLD_FILE_ENV, held, tune_function

# One xdist worker runs this module, so its module-scoped set-up is built once;
# that set-up is long, so the module is scheduled first (tests/conftest.py).
pytestmark = [pytest.mark.xdist_group("tune_function"), pytest.mark.sweep]


@pytest.fixture(scope="module")
def release_file(tmp_path_factory, ray_tmpdir) -> Path:
    """One local Ray for the module's trials, whose trials hold after each report until
    the returned file exists: set before Ray starts, since its worker processes inherit
    the raylet's environment. Each test sets the file as it needs it."""
    from tuner.ray_start import start_ray

    release = tmp_path_factory.mktemp("hold") / "release"
    cache = tmp_path_factory.mktemp("ray_cache")
    with pytest.MonkeyPatch.context() as patch:
        for name, value in isolated_env(ray_tmpdir, cache, ray_tmpdir).items():
            patch.setenv(name, value)
        patch.delenv("RAY_ADDRESS", raising=False)
        patch.setenv(HOLD_FILE_ENV, str(release))
        start_ray(None)
        try:
            yield release
        finally:
            import ray

            ray.shutdown()


def test_trial_reports_checkpoints_and_retries_from_them(
    release_file, demo_dir, demo_data, tmp_path
):
    release_file.touch()  # empty: no trial holds
    marker = tmp_path / "crashed_once"

    def crash_once_after_first_epoch(config, report, data=None, checkpoint_dir=None):
        def crashing_report(metrics, directory):
            report(metrics, directory)
            if not marker.exists():
                marker.touch()
                raise RuntimeError("simulated node loss")

        return train(config, crashing_report, data=data, checkpoint_dir=checkpoint_dir)

    trainable = tune.with_parameters(
        tune_function(crash_once_after_first_epoch, "mobile_vla"), data=demo_data
    )
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


def test_a_trial_holds_after_each_report_until_the_hold_file_exists(release_file, tmp_path):
    release_file.unlink(missing_ok=True)  # missing: every report holds
    Path(f"{release_file}.waiting").unlink(missing_ok=True)
    seen = tmp_path / "seen"  # what the trial saw when each report returned
    seen.mkdir()

    def two_epochs(config, report, data=None, checkpoint_dir=None):
        for epoch in (1, 2):
            state = Path(config["out"]) / f"epoch{epoch}"
            state.mkdir(parents=True)
            (state / "epoch.txt").write_text(str(epoch))
            report({"epoch": epoch}, str(state))
            (Path(config["seen"]) / f"after_report_{epoch}").write_text(
                str(Path(config["release"]).exists())
            )

    results = tmp_path / "results"
    at_wait: dict = {}
    releaser = threading.Thread(
        target=release_once_waiting, args=(release_file, seen, results, at_wait)
    )
    releaser.start()
    tuner = tune.Tuner(
        tune.with_resources(tune_function(two_epochs, "hold"), {"cpu": 1}),
        param_space={"out": str(tmp_path / "out"), "seen": str(seen), "release": str(release_file)},
        run_config=tune.RunConfig(name="hold", storage_path=str(results), verbose=0),
    )
    grid = tuner.fit()
    releaser.join(timeout=200)
    # The trial said it was waiting after report 1, with that report's checkpoint on
    # storage and before its train function went on past the report.
    assert at_wait == {"waiting": True, "seen": [], "checkpoints": ["checkpoint_000000"]}
    assert not grid.errors and grid[0].metrics["epoch"] == 2
    # Both reports returned only once the test had written the file.
    assert {f.name: f.read_text() for f in seen.iterdir()} == {
        "after_report_1": "True",
        "after_report_2": "True",
    }
    checkpoints = sorted(p.name for p in results.glob("hold/*/checkpoint_*"))
    assert checkpoints == ["checkpoint_000000", "checkpoint_000001"]


def release_once_waiting(
    release: Path, seen: Path, results: Path, at_wait: dict, timeout: float = 180
) -> None:
    """Once the trial has created `<release>.waiting`, record what it has done so far in
    `at_wait`, then write `release` (at the failure timeout too, so that a broken hold
    fails the test instead of hanging it)."""
    waiting = Path(f"{release}.waiting")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not waiting.exists():
        time.sleep(0.2)
    at_wait["waiting"] = waiting.exists()
    at_wait["seen"] = sorted(p.name for p in seen.iterdir())
    at_wait["checkpoints"] = sorted(p.name for p in results.glob("hold/*/checkpoint_*"))
    release.touch()


def test_the_hold_file_releases_reports_by_count(tmp_path):
    hold = tmp_path / "hold"
    assert held(1, str(hold), "sweep")  # missing: every report waits
    hold.touch()
    assert not held(1, str(hold), "sweep") and not held(9, str(hold), "sweep")  # empty: none
    hold.write_text("2\n")
    assert [held(n, str(hold), "sweep") for n in (1, 2, 3, 4)] == [False, False, True, True]
    hold.write_text("0 confirm")  # one experiment's trials only
    assert held(1, str(hold), "confirm") and not held(1, str(hold), "sweep")
