"""A Mobile VLA trial that runs out of memory: micro-batches redone as halves, the probe
that picks the micro-batch, and the one line when one window does not fit. The CUDA
error comes from the test hook (a GPU cannot exist here)."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.trainables.mobile_vla.test_trainable import Recorder, assert_same_steps, config, subset
from trainables.micro_batch import OOM_TEST_ENV
from trainables.mobile_vla.frame_batches import backbone_rows, epoch_steps
from trainables.mobile_vla.trainable import parse_config, train
from trainables.training import plan_batches


def test_a_micro_batch_redone_as_halves_gives_the_same_step(
    demo_dir, demo_data, tmp_path, monkeypatch
):
    # One step an epoch (8 windows, batch 8), two epochs: each step's checkpoint compared.
    data = subset(demo_data, 8)
    cfg = config(demo_dir, batch_size=8, micro_batch_size=8, max_epochs=2)  # fixed: no probe
    whole = Recorder(tmp_path / "whole")
    train(cfg, whole, data=data)
    monkeypatch.setenv(OOM_TEST_ENV, "9")  # one window (8 frames) and two overlapping fit
    split = Recorder(tmp_path / "split")
    derived = train(cfg, split, data=data)

    assert split.metrics[0]["oom_splits"] > 0 and whole.metrics[0]["oom_splits"] == 0
    assert derived["micro_batch_frames"] == 64  # a later split changes no setting
    assert_same_steps(split, whole, windows=8, steps=[1, 2])


def test_probe_picks_the_largest_micro_batch_that_fits_without_changing_the_result(
    demo_dir, demo_data, tmp_path, monkeypatch, capsys
):
    data = subset(demo_data, 16)  # one step an epoch, two epochs
    cfg = config(demo_dir, batch_size=16, max_epochs=2)
    plain = Recorder(tmp_path / "plain")
    before = train(cfg, plain, data=data)
    assert "micro_batch_frames:" not in capsys.readouterr().out  # CPU: nothing changes
    assert before["micro_batch_frames"] == 16 * 8

    monkeypatch.setenv(OOM_TEST_ENV, "20")
    probed = Recorder(tmp_path / "probed")
    derived = train(cfg, probed, data=data)
    lines = [line for line in capsys.readouterr().out.splitlines() if "micro_batch_frames" in line]

    # The probe starts from the frames of the epoch's heaviest step and halves.
    parsed = parse_config(cfg)
    plan = plan_batches(parsed.train, len(data.train))
    steps = epoch_steps(data.train, parsed.batching, plan, 16, sys.maxsize, 0, 0)
    largest = max(backbone_rows(data.train.frames, indices, True) for (indices,) in steps)
    expected = largest
    while expected > 20:
        expected = max(8, expected // 2)
    assert largest > 20 and derived["micro_batch_frames"] == expected
    assert lines == [
        f"micro_batch_frames: {expected} (measured on this device: {largest} did not fit)"
    ]
    assert "micro_batch_size" not in derived  # the frames cap is what the batching uses
    assert probed.metrics[0]["micro_batches_per_step"] > plain.metrics[0]["micro_batches_per_step"]
    assert probed.metrics[0]["oom_splits"] == 0  # the chosen micro-batch never runs out
    assert_same_steps(probed, plain, windows=16, steps=[1, 2])


def test_standalone_trainer_prints_the_choice_and_exits_2_when_one_window_does_not_fit(
    demo_dir, tmp_path
):
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(f"data_dir: {demo_dir}\nbatch_size: 32\nmax_epochs: 1\n")
    cmd = [sys.executable, "-m", "trainables.mobile_vla", "--config", str(cfg_file)]

    def run(limit: int) -> subprocess.CompletedProcess:
        env = {**os.environ, OOM_TEST_ENV: str(limit)}
        return subprocess.run(cmd, capture_output=True, text=True, env=env)

    fits = run(40)
    assert fits.returncode == 0, fits.stderr
    lines = fits.stdout.splitlines()
    assert lines[0].startswith("micro_batch_frames: ") and "did not fit" in lines[0]
    assert 20 < int(lines[0].split()[1]) <= 40 and lines[1].startswith("epoch 1/1  train_loss ")

    fails = run(7)
    assert fails.returncode == 2 and "Traceback" not in fails.stderr
    errors = [line for line in fails.stderr.splitlines() if line.startswith("error")]
    assert errors == [  # after the decoding progress: one line
        f"error: one window (8 frames) does not fit in device memory (CUDA out of memory "
        f"(test hook {OOM_TEST_ENV}=7): 8 rows): lower it with gradient_checkpointing: true, "
        "precision: bf16 or fp16, or a larger share of the card (--gpus-per-trial)"
    ]
    assert fails.stderr.endswith(errors[0] + "\n")
