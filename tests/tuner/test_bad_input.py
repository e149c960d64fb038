"""Every bad input is one line naming the file or key, exit 2, before any trial starts."""

from __future__ import annotations

import pytest

from tests.services import cli, free_port, written
from tests.tuner.conftest import SMALL_GRID, run_main
from tuner.run import main


def test_unknown_space(capsys, sweep_args):
    code, err = run_main(capsys, sweep_args("nope"))
    assert code == 2 and err.startswith("error: unknown space 'nope'")


def test_malformed_space_file(capsys, sweep_args, write_space):
    path = write_space("trainable: mobile_vla\nmetric: val_loss\nparams: {learning_rate: 3}\n")
    code, err = run_main(capsys, sweep_args(path))
    assert code == 2
    assert err.startswith(f"error: {path}: params.learning_rate: expected a list of values")


@pytest.mark.parametrize(
    "assignment,message",
    [
        ("lerning_rate=1", "--set lerning_rate: not a config key of 'mobile_vla'"),
        ("lora_target=everything", "lora_target: 'everything' not one of"),
        ("warmup_ratio=-1", "warmup_ratio must be >= 0, got -1.0"),
        ("max_epochs=two", "max_epochs: expected int, got 'two'"),
        ("noequals", "--set expects key=value, got 'noequals'"),
        ("batch_grouping=frames", "batch_grouping: 'frames' not one of ['episode', 'window']"),
        ("micro_batch_frames=4", "micro_batch_frames: 4 is below window_size 8"),
    ],
)
def test_bad_set_key_or_value(capsys, sweep_args, write_space, assignment, message):
    code, err = run_main(capsys, sweep_args(write_space(SMALL_GRID), "--set", assignment))
    assert code == 2 and message in err and len(err.splitlines()) == 1


def test_missing_data_dir_and_no_matching_episodes(capsys, sweep_args, write_space, tmp_path):
    space = write_space(SMALL_GRID)
    args = sweep_args(space)
    args[args.index("--data-dir") + 1] = str(tmp_path / "nowhere")
    code, err = run_main(capsys, args)
    assert code == 2 and err == f"error: {tmp_path / 'nowhere'}: data directory does not exist"

    code, err = run_main(capsys, sweep_args(space, "--pattern", "episode_1999*.h5"))
    assert code == 2 and err.endswith("no episode files match 'episode_1999*.h5'")


def test_corrupt_episode_is_named(capsys, sweep_args, write_space, demo_dir, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(demo_dir, data)
    broken = sorted(data.glob("*.h5"))[3]
    broken.write_bytes(b"garbage")
    args = sweep_args(write_space(SMALL_GRID))
    args[args.index("--data-dir") + 1] = str(data)
    code, err = run_main(capsys, args)
    assert code == 2 and f"{broken}: not an HDF5 file" in err
    assert not (tmp_path / "results").exists()  # nothing started


def test_zero_steps_per_epoch_names_the_configuration(capsys, sweep_args):
    # 16 demo episodes give far fewer than 256 training windows.
    code, err = run_main(capsys, sweep_args("grid_robovlms"))
    assert code == 2
    assert err.startswith("error: lr=1e-04,wd=0,bs=256,wu=0.25: batch_size 256 exceeds the ")
    assert err.endswith("zero optimizer steps per epoch")


def test_unreachable_mlflow_server(capsys, sweep_args, write_space):
    port = free_port()
    args = sweep_args(write_space(SMALL_GRID))
    args[args.index("--mlflow-uri") + 1] = f"http://127.0.0.1:{port}"
    code, err = run_main(capsys, args)
    assert code == 2 and err.startswith(
        f"error: MLflow server http://127.0.0.1:{port} is unreachable"
    )


def test_bad_input_from_the_real_cli_has_no_traceback(sweep_args, write_space):
    run = cli("tuner.run", *sweep_args(write_space(SMALL_GRID), "--set", "x=1"))
    assert run.returncode == 2
    assert run.stderr.strip() == "error: --set x: not a config key of 'mobile_vla'"


def test_dry_run_prints_plans_and_starts_nothing(capsys, sweep_args, write_space, tmp_path):
    assert main(sweep_args(write_space(SMALL_GRID), "--dry-run")) == 0
    out = capsys.readouterr().out
    assert "4 trials:" in out
    assert "lr=0.003,wd=0" in out and "micro_batch_frames=256, " in out  # 32 windows of 8
    assert "accumulation" not in out  # a Mobile VLA step is cut by frames, not windows
    assert not (tmp_path / "results").exists()


def test_set_of_a_searched_key_is_type_checked(capsys, sweep_args):
    # The grid searched learning_rate: its --set value was dropped unchecked, and the
    # sweep ran. Now the --set pins it and a bad value is refused before anything starts.
    code, err = run_main(capsys, sweep_args("grid_robovlms", "--set", "learning_rate=abc"))
    assert code == 2 and err == "error: --set learning_rate: expected float, got 'abc'"


def test_set_of_a_fixed_key_names_the_set(capsys, sweep_args, write_space):
    code, err = run_main(capsys, sweep_args(write_space(SMALL_GRID), "--set", "batch_size=x"))
    assert code == 2 and err == "error: --set batch_size: expected int, got 'x'"


@pytest.mark.parametrize("name", ["../../x", "a/b", "..", ".", ".hidden", "", "a\\b", "/abs"])
def test_name_is_one_folder_under_the_storage_path(capsys, sweep_args, write_space, tmp_path,
                                                   name):  # fmt: skip
    code, err = run_main(capsys, sweep_args(write_space(SMALL_GRID), "--name", name))
    assert code == 2 and err.startswith(f"error: --name {name!r}: expected one folder name")
    code, err = run_main(capsys, ["--resume", "--name", name])
    assert code == 2 and err.startswith(f"error: --name {name!r}")
    assert written(tmp_path) == ["space.yaml"]  # nothing written


def test_no_validation_data_is_refused(capsys, sweep_args, write_space, demo_dir, tmp_path):
    space = write_space(SMALL_GRID)
    code, err = run_main(capsys, sweep_args(space, "--set", "val_ratio=0"))
    assert code == 2 and err.startswith("error: val_ratio=0 leaves no validation data (")
    assert "0 validation windows" in err and "'val_loss' would never be reported" in err

    one = tmp_path / "one"  # one episode: nothing left to validate on
    one.mkdir()
    episode = sorted(demo_dir.glob("*.h5"))[0]
    (one / episode.name).write_bytes(episode.read_bytes())
    args = sweep_args(space)
    args[args.index("--data-dir") + 1] = str(one)
    code, err = run_main(capsys, args)
    assert code == 2 and err.startswith("error: val_ratio=0.1 leaves no validation data (1 ")
    assert not (tmp_path / "results").exists()


def test_a_searched_val_ratio_is_checked_at_each_value(capsys, sweep_args, write_space, tmp_path):
    # Only the first grid point's data was checked: the val_ratio=0 trials errored later.
    space = write_space(SMALL_GRID.replace("weight_decay: [0.0, 0.1]", "val_ratio: [0.25, 0.0]"))
    code, err = run_main(capsys, sweep_args(space))
    assert code == 2 and err.startswith("error: val_ratio=0.0 leaves no validation data (")
    assert not (tmp_path / "results").exists()


def test_too_long_ray_tmpdir_is_refused(capsys, sweep_args, write_space, tmp_path, monkeypatch):
    long_dir = tmp_path / ("x" * 60)
    monkeypatch.setenv("RAY_TMPDIR", str(long_dir))
    code, err = run_main(capsys, sweep_args(write_space(SMALL_GRID)))
    assert code == 2 and err.startswith(f"error: RAY_TMPDIR={long_dir}: Ray's unix socket paths")
    assert "over the limit of 107; set RAY_TMPDIR to a folder of at most 39 characters" in err
    assert not long_dir.exists() and not (tmp_path / "results").exists()
    assert not (tmp_path / "mlflow.db").exists()
