"""The Mobile VLA policy as a tuner task."""

from __future__ import annotations

import dataclasses
from typing import Any

from trainables.config import defaults_of, keys_of
from trainables.mobile_vla.configuration_mobile_vla import ModelConfig
from trainables.mobile_vla.dataset import DataConfig, DataError, MobileVLAData, load_dataset
from trainables.mobile_vla.demo_data import ensure_demo_episodes
from trainables.mobile_vla.frame_batches import BatchingConfig
from trainables.mobile_vla.robovlms_config import to_robovlms
from trainables.mobile_vla.robovlms_import import import_for_sweep
from trainables.mobile_vla.trial_config import RunOptions, parse_config
from trainables.task import Task
from trainables.training import TrainConfig, plan_batches


def train(config: dict[str, Any], report: Any, data: Any = None, checkpoint_dir: Any = None):
    """The trial itself; imported on first use (torch + transformers + peft take seconds)."""
    from trainables.mobile_vla.trainable import train as run_trial

    return run_trial(config, report, data=data, checkpoint_dir=checkpoint_dir)


def precompute(flat: dict[str, Any], data: MobileVLAData, device: str):
    """Frozen image features of every frame, once for the whole sweep."""
    from trainables.mobile_vla.image_features import precompute_for_sweep

    return precompute_for_sweep(parse_config(flat), data, device)


def check_config(flat: dict[str, Any]) -> None:
    parse_config(flat)


def load_data(flat: dict[str, Any]) -> MobileVLAData:
    return load_dataset(parse_config(flat).data)


def plan(flat: dict[str, Any], data: MobileVLAData) -> dict[str, Any]:
    return dataclasses.asdict(plan_batches(parse_config(flat).train, len(data.train)))


def summary(data: MobileVLAData) -> str:
    line = (
        f"{data.num_episodes} episodes, {len(data.images)} frames at "
        f"{data.images.shape[1]}x{data.images.shape[2]}, {len(data.train)} training and "
        f"{len(data.val)} validation windows"
    )
    if data.skipped:
        line += f" ({len(data.skipped)} bad files skipped)"
    return line


def demo_data(flat: dict[str, Any]) -> tuple[dict[str, Any], str]:
    folder, created = ensure_demo_episodes()
    verb = "generated" if created else "using"
    return {**flat, "data_dir": str(folder)}, f"{verb} demo episodes in {folder}"


TASK = Task(
    name="mobile_vla",
    train=train,
    check_config=check_config,
    load_data=load_data,
    plan=plan,
    summary=summary,
    demo_data=demo_data,
    precompute=precompute,
    export_config=to_robovlms,
    import_config=import_for_sweep,
    data_errors=(DataError,),
    keys=keys_of(DataConfig, ModelConfig, TrainConfig, BatchingConfig, RunOptions),
    data_keys=frozenset(keys_of(DataConfig)) | {"model", "tiny_image_size", "tiny_patch_size"},
    cli_keys={"data_dir": "data_dir", "pattern": "pattern", "model": "model"},
    defaults=defaults_of(DataConfig, ModelConfig, TrainConfig, RunOptions),
    val_size=lambda data: len(data.val),
)
