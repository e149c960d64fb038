"""The task's keys and defaults come from every config section, batching included."""

from __future__ import annotations

from trainables.mobile_vla.batching_config import BatchingConfig
from trainables.mobile_vla.task import TASK


def test_every_section_gives_its_keys_and_defaults():
    assert {"data_dir", "model", "learning_rate", "frame_dedup", "max_epochs"} <= set(TASK.keys)
    assert TASK.defaults["frame_dedup"] is BatchingConfig.frame_dedup
    assert TASK.defaults["micro_batch_frames"] == BatchingConfig.micro_batch_frames
    assert set(TASK.defaults) <= set(TASK.keys)
