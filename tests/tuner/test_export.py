"""`python -m tuner.export` on a machine that lacks what best.json points at."""

from __future__ import annotations

import json
import subprocess

import pytest
import torch

from tests.services import cli
from trainables.mobile_vla.checkpoint import ADAPTER_DIR, CONFIG_FILE, HEAD_FILE
from trainables.mobile_vla.inference import Policy
from trainables.training_state import STATE_FILE, TRIAL_CONFIG_FILE
from tuner.export import EXPORT_RECORD
from tuner.storage import BEST_FILE, Storage


def write_sweep(
    root, checkpoint, model: str = "tiny", data_dir: str = "/data/episodes",
    trainable: str = "mobile_vla",
) -> None:  # fmt: skip
    """A finished sweep's best.json, as tuner.summary writes it."""
    Storage(str(root), "sweep").write_json(
        BEST_FILE,
        {
            "trial": "lr=0.001",
            "trial_id": "abc_00000",
            "metric": "val_loss",
            "mode": "min",
            "value": 0.25,
            "epochs": 2,
            "config": {"model": model, "data_dir": str(data_dir), "learning_rate": 1e-3},
            "checkpoint": str(checkpoint),
            "space": "lora_tpe",
            "trainable": trainable,
        },
    )


def export(root, out) -> subprocess.CompletedProcess:
    return cli("tuner.export", "--storage-path", root, "--out", out)


@pytest.fixture
def checkpoint(tiny_checkpoint):
    """A trial's checkpoint: the tiny policy, and the optimizer state only resuming needs."""
    torch.save({"epoch": 1}, tiny_checkpoint / STATE_FILE)
    return tiny_checkpoint


def test_exports_a_local_checkpoint(tmp_path, checkpoint, demo_dir):
    write_sweep(tmp_path / "results", checkpoint, data_dir=demo_dir)
    run = export(tmp_path / "results", tmp_path / "out")
    assert run.returncode == 0, run.stderr
    out = tmp_path / "out"
    assert json.loads((out / "config.json").read_text())["learning_rate"] == 1e-3
    # backbone/: the tiny model's random weights and tokenizer, rebuilt from the episodes;
    # the checkpoint's files but its optimizer state; export.json names the trainable.
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [ADAPTER_DIR, "backbone", "config.json", CONFIG_FILE, HEAD_FILE, TRIAL_CONFIG_FILE,
         EXPORT_RECORD]
    )  # fmt: skip
    assert json.loads((out / EXPORT_RECORD).read_text())["trainable"] == "mobile_vla"
    assert (out / "backbone" / "tokenizer.json").is_file()
    exported, trained = Policy.from_export(out), Policy.from_checkpoint(checkpoint)
    assert torch.equal(exported.model.action_token, trained.model.action_token)


def test_tiny_model_without_its_episodes_is_one_error_line_and_writes_nothing(tmp_path, checkpoint):
    missing = tmp_path / "elsewhere" / "episodes"
    write_sweep(tmp_path / "results", checkpoint, data_dir=missing)
    run = export(tmp_path / "results", tmp_path / "out")
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert run.stderr == f"error: {missing}: data directory does not exist\n"
    assert not (tmp_path / "out").exists()


def test_missing_checkpoint_is_one_error_line_and_writes_nothing(tmp_path):
    missing = tmp_path / "elsewhere" / "checkpoint_000002"
    write_sweep(tmp_path / "results", missing)
    run = export(tmp_path / "results", tmp_path / "out")
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert run.stderr == (
        f"error: checkpoint {missing} is not a folder on this machine "
        "(export where the sweep's storage is mounted)\n"
    )
    assert not (tmp_path / "out").exists()


def test_missing_model_folder_is_one_error_line_and_writes_nothing(tmp_path, checkpoint):
    model = tmp_path / "models" / "kosmos-2-patch14-224"  # where the cluster had it
    write_sweep(tmp_path / "results", checkpoint, model=str(model))
    run = export(tmp_path / "results", tmp_path / "out")
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert run.stderr.startswith("error: ") and run.stderr.count("\n") == 1, run.stderr
    assert f"model: {model} is not a folder on this machine" in run.stderr
    assert not (tmp_path / "out").exists()


def test_a_name_that_leaves_the_storage_root_is_refused(tmp_path, checkpoint, demo_dir):
    write_sweep(tmp_path / "results", checkpoint, data_dir=demo_dir)  # results/sweep
    run = cli(
        "tuner.export", "--storage-path", tmp_path / "results" / "x",
        "--name", "../sweep", "--out", tmp_path / "out",
    )  # fmt: skip
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert run.stderr.startswith("error: --name '../sweep': expected one folder name")
    assert not (tmp_path / "out").exists()


def test_merge_of_a_task_without_a_backbone_is_refused(tmp_path):
    checkpoint = tmp_path / "results" / "sweep" / "trial" / "checkpoint_000000"
    checkpoint.mkdir(parents=True)
    write_sweep(tmp_path / "results", checkpoint, trainable="robot_code")
    run = cli("tuner.export", "--storage-path", tmp_path / "results", "--out", tmp_path / "out",
              "--merge")  # fmt: skip
    assert run.returncode == 2
    assert run.stderr == "error: --merge: trainable robot_code has no backbone to merge\n"
    assert not (tmp_path / "out").exists()
