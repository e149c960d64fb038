"""The Mobile VLA policy as a tuner task (see trainables/task.py)."""

from __future__ import annotations

import dataclasses
from typing import Any

from trainables.config import defaults_of, keys_of
from trainables.mobile_vla.batching_config import frames_per_micro_batch
from trainables.mobile_vla.dataset import DataConfig, DataError, MobileVLAData, load_dataset
from trainables.mobile_vla.demo_data import ensure_demo_episodes
from trainables.mobile_vla.robovlms_config import to_robovlms
from trainables.mobile_vla.robovlms_import import import_for_sweep, load_robovlms
from trainables.mobile_vla.trial_config import SECTIONS, parse_config
from trainables.task import demo_message, lazy, make_task
from trainables.training import plan_batches

WINDOW_SPLIT = ("micro_batch_size", "accumulation")  # the shared plan's, not used here


def precompute(flat: dict[str, Any], data: MobileVLAData, device: str):
    """Frozen image features of every frame, once for the whole sweep."""
    from trainables.mobile_vla.image_features import precompute_for_sweep

    return precompute_for_sweep(parse_config(flat), data, device)


def plan(flat: dict[str, Any], data: MobileVLAData) -> dict[str, Any]:
    """The shared schedule and the cap on backbone frames per micro-batch: a step's
    windows are cut by frames, so no window micro-batch or accumulation count applies."""
    cfg = parse_config(flat)
    batches = plan_batches(cfg.train, len(data.train))
    frames = frames_per_micro_batch(cfg.batching, batches, cfg.data.window_size)
    schedule = {k: v for k, v in dataclasses.asdict(batches).items() if k not in WINDOW_SPLIT}
    return {"micro_batch_frames": frames, **schedule}


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
    return {**flat, "data_dir": str(folder)}, demo_message(created, "demo episodes", folder)


TASK = make_task(
    "mobile_vla",
    parse_config,
    load_dataset,
    keys=keys_of(*SECTIONS.values()),
    defaults=defaults_of(*SECTIONS.values()),
    # the model and its image size decide the frames' size in the loaded data
    data_keys=frozenset(keys_of(DataConfig)) | {"model", "tiny_image_size", "tiny_patch_size"},
    cli_keys={"data_dir": "data_dir", "pattern": "pattern", "model": "model"},
    data_errors=(DataError,),
    summary=summary,
    demo_data=demo_data,
    precompute=precompute,
    plan=plan,
    batch_keys=("micro_batch_frames",),
    export_config=to_robovlms,
    export_writer=lazy("trainables.mobile_vla.export_model", "prepare_writer"),
    import_config=import_for_sweep,
    load_reference=load_robovlms,
    evaluate=lazy("trainables.mobile_vla.evaluate_policy", "evaluate"),
    checkpoint_bytes=lazy("trainables.mobile_vla.saved_size", "checkpoint_bytes"),
)
