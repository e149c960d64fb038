"""The calibration: a real trial's steps, validation and checkpoint timed on the demo
data, and its cache keyed by what changes the cost."""

from __future__ import annotations

import json
import sys

import pytest

from trainables.calibrate import (
    CalibrationCache,
    calibrate,
    cost_key,
    measure,
    worker_import_s,
)
from trainables.mobile_vla.task import TASK


@pytest.fixture
def flat(demo_dir, tmp_path):
    return {
        "data_dir": str(demo_dir),
        "cache_dir": str(tmp_path / "decoded"),
        "batch_size": 32,
        "max_micro_batch_size": 16,
        "torch_threads": 1,
    }


def test_measure_runs_the_trials_own_steps(flat, demo_data):
    plan = TASK.plan(flat, demo_data)
    got = measure("mobile_vla", {**flat, "device": "cpu"}, demo_data, steps=2)
    # its frames cap only, 16 windows of 8 frames: no window micro-batch x accumulation
    assert got.batching == {"micro_batch_frames": plan["micro_batch_frames"]}
    assert plan["micro_batch_frames"] == 16 * 8
    assert got.steps_per_epoch == plan["steps_per_epoch"]
    assert got.device == "cpu (1 threads)" and got.precision == "fp32"
    assert min(got.step_s, got.setup_s, got.validate_s, got.checkpoint_s) > 0
    assert got.epoch_s() == pytest.approx(
        got.steps_per_epoch * got.step_s + got.validate_s + got.checkpoint_s
    )
    with pytest.raises(ValueError, match="steps must be >= 2"):
        measure("mobile_vla", flat, demo_data, steps=1)


def test_the_cache_keys_on_the_plan_not_on_the_learning_rate(flat, demo_data, tmp_path):
    cache = CalibrationCache(tmp_path / "calibration")
    first, cached = calibrate("mobile_vla", flat, demo_data, "demo", "cpu", cache, steps=2)
    assert not cached
    again, cached = calibrate(
        "mobile_vla", {**flat, "learning_rate": 3e-3}, demo_data, "demo", "cpu", cache
    )
    assert cached and again == first  # read back, not measured again
    assert len(list(cache.root.glob("*.json"))) == 1

    other, cached = calibrate(
        "mobile_vla", {**flat, "batch_size": 64}, demo_data, "demo", "cpu", cache, steps=2
    )
    assert not cached and other.steps_per_epoch < first.steps_per_epoch
    assert other.batching == first.batching  # the frames cap follows the micro-batch cap
    _, cached = calibrate("mobile_vla", flat, demo_data, "other data", "cpu", cache, steps=2)
    assert not cached
    assert len(list(cache.root.glob("*.json"))) == 3

    # A damaged entry is measured again and rewritten.
    entry = cache.path(cache.key("mobile_vla", flat, "demo", "cpu x1"))
    assert json.loads(entry.read_text())["step_s"] == first.step_s
    entry.write_text("{not json")
    _, cached = calibrate("mobile_vla", flat, demo_data, "demo", "cpu", cache, steps=2)
    assert not cached and json.loads(entry.read_text())["batching"] == first.batching


def test_cost_key_drops_only_what_costs_nothing():
    key = cost_key({"learning_rate": 1e-4, "seed": 3, "batch_size": 64, "lora_r": 8})
    assert key == {"batch_size": "64", "lora_r": "8"}


def test_a_fresh_workers_import_is_measured_in_a_fresh_interpreter(tmp_path):
    """This process has loaded the task's stack; a fresh Ray worker imports it again, so
    the calibration times a fresh interpreter's import, once per environment."""
    seconds = worker_import_s("robot_code", tmp_path)
    assert seconds > 0.3  # transformers and peft in a new process: not the ~0 s of a reload
    (entry,) = (tmp_path / "imports").glob("*.json")
    saved = json.loads(entry.read_text())
    assert saved["import_s"] == seconds and saved["key"]["python"] == sys.executable
    assert worker_import_s("robot_code", tmp_path) == seconds  # read back, not measured
    entry.write_text(json.dumps({**saved, "import_s": 123.0}))
    assert worker_import_s("robot_code", tmp_path) == 123.0

    with pytest.raises(RuntimeError, match="could not import trainables.no_such_task.trainable"):
        worker_import_s("no_such_task", tmp_path)
