"""The tuner's view of the trainable: config checks, demo data, shared data, plans."""

from __future__ import annotations

import pickle

import pytest

from trainables.config import ConfigError
from trainables.robot_code.task import TASK
from trainables.training import TrainingError


def test_task_record(isolated_caches):
    assert TASK.name == "robot_code"
    assert {"data_path", "val_path", "lora_r", "lora_target", "max_length"} <= set(TASK.keys)
    assert {"learning_rate", "warmup_ratio"} <= set(TASK.keys) and "exact_match" not in TASK.keys
    assert "data_path" in TASK.data_keys and "learning_rate" not in TASK.data_keys
    with pytest.raises(ConfigError, match="unknown config key 'lora_rnak'"):
        TASK.check_config({"lora_rnak": 8})

    config, message = TASK.demo_data({"demo_records": 100, "lora_r": 8})
    assert config["data_path"].startswith(str(isolated_caches / "vla-tune" / "robot_code_demo"))
    assert message == f"generated 100 demo commands in {config['data_path']}"
    assert TASK.demo_data({"demo_records": 100})[1].startswith("using 100 demo commands")

    data = TASK.load_data(config)
    assert pickle.loads(pickle.dumps(data)) == data  # what Ray's object store needs
    assert TASK.summary(data) == (
        "90 training and 10 validation records (manipulation, movement, navigation, "
        f"sequence, turning) from {config['data_path']}"
    )
    assert TASK.plan({**config, "batch_size": 16}, data)["steps_per_epoch"] == 5
    with pytest.raises(TrainingError, match="zero optimizer steps"):
        TASK.plan({**config, "batch_size": 128}, data)
