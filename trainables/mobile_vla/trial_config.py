"""A Mobile VLA trial's flat config -> its data, model, training and run configs.

Kept free of transformers and peft (it needs only torch, through TrainConfig) so the
tuner can check every configuration of a sweep, and say what is wrong, in a second.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from trainables.config import ConfigError, route
from trainables.mobile_vla.batching_config import BatchingConfig
from trainables.mobile_vla.configuration_mobile_vla import ModelConfig
from trainables.mobile_vla.dataset import DataConfig
from trainables.training import TrainConfig
from trainables.trial_loop import RunOptions


@dataclass
class TrialConfig:
    data: DataConfig
    model: ModelConfig
    train: TrainConfig
    batching: BatchingConfig
    run: RunOptions


SECTIONS = {
    "data": DataConfig,
    "model": ModelConfig,
    "train": TrainConfig,
    "batching": BatchingConfig,
    "run": RunOptions,
}


def parse_config(flat: dict[str, Any]) -> TrialConfig:
    """Route the flat dict; derive what follows from other keys (image size, action dim)."""
    parts = route(flat, SECTIONS)
    try:
        model = dataclasses.replace(parts["model"], action_dim=len(parts["data"].action_dims))
        data = dataclasses.replace(parts["data"], image_size=model.image_size())
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return TrialConfig(
        data=data,
        model=model,
        train=parts["train"],
        batching=parts["batching"],
        run=parts["run"],
    )
