"""A robot-code trial that runs out of memory: micro-batches redone as halves, the probe
that picks micro_batch_size, and the one line when one sequence does not fit. The CUDA
error comes from the test hook (a GPU cannot exist here)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from tests.trainables.robot_code.test_trainable import (
    ADAPTER,
    FAST,
    SEQUENCE,
    Recorder,
    assert_same_training,
    small_data,
)
from trainables.micro_batch import OOM_TEST_ENV
from trainables.robot_code.trainable import train
from trainables.training import TrainingError


def test_a_micro_batch_redone_as_halves_gives_the_same_step(tmp_path, monkeypatch):
    data = small_data(8, 2)  # one step an epoch, two epochs
    config = {**FAST, "batch_size": 8, "micro_batch_size": 8, "max_epochs": 2}  # no probe
    whole = Recorder(tmp_path / "whole")
    train(config, whole, data=data)
    monkeypatch.setenv(OOM_TEST_ENV, "3")  # 8 -> 4 + 4 -> 2 + 2 + 2 + 2
    split = Recorder(tmp_path / "split")
    derived = train(config, split, data=data)
    # The first step runs out of memory three times; the second starts from 2 + 2 + 2 + 2.
    assert [m["oom_splits"] for m in split.metrics] == [3, 3]
    assert whole.metrics[1]["oom_splits"] == 0
    assert (derived["micro_batch_size"], derived["accumulation"]) == (8, 1)
    assert_same_training(split, whole, rows=8 * SEQUENCE)


def test_probe_picks_the_largest_micro_batch_that_fits_without_changing_the_result(
    tmp_path, monkeypatch, capsys
):
    data = small_data(12, 2)  # one step an epoch, two epochs
    config = {**FAST, "batch_size": 12, "max_epochs": 2}
    plain = Recorder(tmp_path / "plain")
    before = train(config, plain, data=data)
    assert "micro_batch_size:" not in capsys.readouterr().out  # CPU: nothing changes
    assert (before["micro_batch_size"], before["accumulation"]) == (12, 1)

    monkeypatch.setenv(OOM_TEST_ENV, "5")  # tries 12 and 6 sequences, then 3 fits
    probed = Recorder(tmp_path / "probed")
    derived = train(config, probed, data=data)
    assert capsys.readouterr().out.splitlines()[0] == (
        "micro_batch_size: 3 (measured on this device: 12 did not fit)"
    )
    assert (derived["micro_batch_size"], derived["accumulation"]) == (3, 4)
    assert probed.metrics[0]["micro_batches_per_step"] == 4
    assert probed.metrics[0]["oom_splits"] == 0
    assert_same_training(probed, plain, rows=12 * SEQUENCE)

    monkeypatch.setenv(OOM_TEST_ENV, "0")
    with pytest.raises(TrainingError, match=r"^one sequence \(\d+ tokens\) does not fit in"):
        train(config, Recorder(tmp_path / "none"), data=data)


def test_probe_leaves_every_rng_as_it_was(tmp_path, monkeypatch):
    """With dropout the probe's forward draws random numbers: restored, the trial trains
    bit for bit as one given the same micro-batch."""
    data = small_data(24, 2)
    config = {**FAST, "batch_size": 12, "max_epochs": 1, "lora_dropout": 0.1}
    fixed = Recorder(tmp_path / "fixed")
    train({**config, "micro_batch_size": 3}, fixed, data=data)
    monkeypatch.setenv(OOM_TEST_ENV, "5")
    probed = Recorder(tmp_path / "probed")
    assert train(config, probed, data=data)["micro_batch_size"] == 3
    ours, theirs = (
        load_file(probed.checkpoint(1) / ADAPTER),
        load_file(fixed.checkpoint(1) / ADAPTER),
    )
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)
    assert probed.metrics[0]["train_loss"] == fixed.metrics[0]["train_loss"]
