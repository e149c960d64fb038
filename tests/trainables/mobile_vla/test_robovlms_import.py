"""A RoboVLMs batch that is not a positive integer is refused as a config error, like
every vla-tune integer key."""

from __future__ import annotations

import pytest

from trainables.config import ConfigError
from trainables.mobile_vla.robovlms_import import from_robovlms


def test_batch_size_times_accumulation_or_a_config_error():
    raw = {"batch_size": 4, "trainer": {"accumulate_grad_batches": 2}}
    assert from_robovlms(raw).flat["batch_size"] == 8
    with pytest.raises(ConfigError, match="batch_size: expected an integer >= 1, got 0"):
        from_robovlms({"batch_size": 0})
    bad = {"batch_size": 4, "trainer": {"accumulate_grad_batches": 2.5}}
    with pytest.raises(ConfigError, match="trainer.accumulate_grad_batches: .* got 2.5"):
        from_robovlms(bad)


def test_gradient_checkpointing_is_mapped_not_ignored():
    imported = from_robovlms({"train_setup": {"gradient_checkpointing": True}})
    assert imported.flat == {"gradient_checkpointing": True} and imported.ignored == []
    assert from_robovlms({"train_setup": {"gradient_checkpointing": False}}).flat == {
        "gradient_checkpointing": False
    }
