"""The calibration: a real trial's steps, validation and checkpoint timed on the demo
data, and its cache keyed by what changes the cost."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from trainables.calibrate import CalibrationCache, calibrate, cost_key, measure
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
    assert (got.micro_batch_size, got.accumulation) == (16, 2)
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
    assert not cached and other.accumulation == 4
    _, cached = calibrate("mobile_vla", flat, demo_data, "other data", "cpu", cache, steps=2)
    assert not cached
    assert len(list(cache.root.glob("*.json"))) == 3

    # A damaged entry is measured again and rewritten.
    entry = cache.path("mobile_vla", flat, "demo", "cpu x1")
    assert json.loads(entry.read_text())["step_s"] == first.step_s
    entry.write_text("{not json")
    _, cached = calibrate("mobile_vla", flat, demo_data, "demo", "cpu", cache, steps=2)
    assert not cached and json.loads(entry.read_text())["micro_batch_size"] == 16


def test_cost_key_drops_only_what_costs_nothing():
    key = cost_key({"learning_rate": 1e-4, "seed": 3, "batch_size": 64, "lora_r": 8})
    assert key == {"batch_size": "64", "lora_r": "8"}


FRESH_PROCESS = """
from trainables.calibrate import trial_class_of
from trainables.task import FIRST_IMPORT_S, import_timed

import_timed("trainables.robot_code.trainable")  # as the driver's lazy hooks load it
first = FIRST_IMPORT_S["trainables.robot_code.trainable"]
_, counted = trial_class_of("robot_code")  # loaded by now: importing again costs nothing
print(first, counted)
"""


def test_a_fresh_workers_import_is_counted_when_the_driver_has_loaded_it():
    """A calibration in the driver runs after the task's stack is imported there; a fresh
    Ray worker imports it again, so the calibration counts the driver's first import."""
    run = subprocess.run([sys.executable, "-c", FRESH_PROCESS], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    first, counted = map(float, run.stdout.split())
    assert first > 0.1  # torch is loaded, transformers and peft are not: seconds, not 0
    assert counted >= first
