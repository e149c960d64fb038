"""A trial's configuration as a RoboVLMs config JSON, in the schema RoboVLMs' `main.py`
reads: `batch_size` per device, `trainer.accumulate_grad_batches`, `scheduler`,
`warmup_epochs`, an `act_head` with a numeric `hidden_size` and post history.

A sweep started `--from-robovlms` exports that file (its parents merged in) with only the
values the sweep chose changed; every other key stays as it was.
"""

from __future__ import annotations

import copy
from typing import Any

from trainables.mobile_vla.robovlms_import import DIRECT, PRECISIONS_OUT, from_robovlms
from trainables.mobile_vla.trial_config import TrialConfig, parse_config
from trainables.training import plan_batches

# vla-tune key -> where RoboVLMs reads it: (section, key); "" is the top level. What the
# import maps one to one goes back where it came from (one table, robovlms_import.DIRECT);
# the rest is written to every place RoboVLMs reads it.
PLACES = {
    **{key: [place] for place, key in DIRECT.items()},
    "lr_schedule": [("", "scheduler")],
    "window_size": [("", "window_size"), ("act_head", "window_size")],
    "fwd_pred_next_n": [("", "fwd_pred_next_n"), ("act_head", "fwd_pred_next_n")],
    "precision": [("trainer", "precision"), ("train_setup", "precision")],
    "grad_clip": [("trainer", "gradient_clip_val")],
    "action_bound": [("", "norm_max"), ("", "norm_min")],
}


def split_batch(global_batch: int, micro: int, devices: int) -> tuple[int, int]:
    """(batch_size per device, accumulate_grad_batches) whose product times `devices` is
    the global batch, with the per-device batch at most the planned micro-batch."""
    if devices < 1 or global_batch % devices:
        raise ValueError(f"--devices {devices}: does not divide the batch_size {global_batch}")
    per_device = global_batch // devices
    size = max(d for d in range(1, min(micro, per_device) + 1) if per_device % d == 0)
    return size, per_device // size


def robovlms_values(cfg: TrialConfig, devices: int) -> dict[str, Any]:
    """Every value a RoboVLMs config takes from a trial, keyed by vla-tune key (batch_size
    as the (per-device batch, accumulation) pair)."""
    model, train, data = cfg.model, cfg.train, cfg.data
    width = backbone_width(model)  # reads the model's config.json unless tiny
    plan = plan_batches(train, train.batch_size)  # the micro-batch does not depend on the data
    return {
        "learning_rate": train.learning_rate,
        "min_lr_scale": train.min_lr_scale,
        "weight_decay": train.weight_decay,
        "warmup_ratio": train.warmup_ratio,
        "seed": train.seed,
        "lr_schedule": train.lr_schedule,
        "window_size": data.window_size,
        "fwd_pred_next_n": data.fwd_pred_next_n,
        "precision": PRECISIONS_OUT[train.precision],
        "grad_clip": train.grad_clip,
        "max_epochs": train.max_epochs,
        "train_vision": model.train_vision,
        "freeze_backbone": model.freeze_backbone,
        "train_text_embedding": model.train_text_embedding,
        "lora_enable": model.lora_enable,
        "lora_r": model.lora_r,
        "lora_alpha": model.lora_alpha,
        "lora_dropout": model.lora_dropout,
        "gradient_checkpointing": model.gradient_checkpointing,
        "head_hidden": model.head_width(width),
        "head_layers": model.lstm_layers(width),
        "action_bound": data.action_bound,
        "batch_size": split_batch(train.batch_size, plan.micro_batch_size, devices),
    }


def backbone_width(model: Any) -> int:
    if model.is_tiny:
        return model.tiny_hidden
    from transformers import Kosmos2Config

    config = Kosmos2Config.from_pretrained(model.source, local_files_only=model.is_local)
    return config.text_config.embed_dim


def to_robovlms(
    flat: dict[str, Any], reference: dict[str, Any] | None = None, devices: int | None = None
) -> dict[str, Any]:
    """The trial as a RoboVLMs config; from `reference` (the file the sweep started from)
    when given, changing only the values the sweep chose."""
    if reference is not None:
        return _update(reference, flat, devices)
    devices = devices or 1
    cfg = parse_config(flat)
    values = robovlms_values(cfg, devices)
    doc = fresh(cfg, devices)
    for key, places in PLACES.items():
        _put(doc, places, key, values[key])
    doc["batch_size"], doc["trainer"]["accumulate_grad_batches"] = values["batch_size"]
    return doc


def _put(doc: dict[str, Any], places: list[tuple[str, str]], key: str, value: Any) -> None:
    for section, name in places:
        target = doc.setdefault(section, {}) if section else doc
        target[name] = -value if (key, name) == ("action_bound", "norm_min") else value


def _update(reference: dict[str, Any], flat: dict[str, Any], devices: int | None) -> dict[str, Any]:
    imported = from_robovlms(reference)
    devices = devices or imported.devices
    doc = copy.deepcopy(reference)
    values = robovlms_values(parse_config(flat), devices)
    for key, places in PLACES.items():
        if key in flat and flat[key] != imported.flat.get(key):
            if key == "action_bound":
                doc["norm_action"] = True
            _put(doc, places, key, values[key])
    batch = flat.get("batch_size", imported.flat.get("batch_size"))
    if batch != imported.flat.get("batch_size") or devices != imported.devices:
        doc["batch_size"], accumulate = values["batch_size"]
        doc.setdefault("trainer", {})["accumulate_grad_batches"] = accumulate
        if devices != imported.devices:
            doc["trainer"]["devices"] = devices
    if imported.max_steps is not None:  # the sweep chose epochs: a step cap would cut them
        doc["trainer"]["max_steps"] = -1
    return doc


def fresh(cfg: TrialConfig, devices: int) -> dict[str, Any]:
    """The keys a RoboVLMs config needs beyond the searched values."""
    model, data = cfg.model, cfg.data
    height, width = data.image_size
    return {
        "robovlm_name": "RoboKosMos",
        "model": "kosmos",
        "model_path": model.model,
        "image_size": height if height == width else [height, width],
        "norm_action": True,
        "optimizer": "adamw",
        "trainer": {"devices": devices, "max_steps": -1},
        "train_setup": {
            "predict_action": True,
            "predict_forward": False,
            "lora_bias": "none",
            "lora_target": model.lora_target,
        },
        "act_head": {
            "type": "LSTMDecoder",
            "action_dim": model.action_dim,
            "action_names": list(data.action_dims),
            "with_history": True,
            "history_type": "post",
            "action_space": "continuous",
            "loss": model.loss,
        },
        "vlm": {
            "type": "Kosmos2ForConditionalGeneration",
            "pretrained_model_name_or_path": model.model,
            "name": "kosmos",
        },
        "train_dataset": {
            "type": "MobileVLAH5Dataset",
            "data_dir": data.data_dir,
            "pattern": data.pattern,
            "val_ratio": data.val_ratio,
            "split_seed": data.split_seed,
        },
    }
