"""A RoboVLMs config JSON (the file the team's `main.py` reads) -> flat trial keys.

Every key of the file is either mapped onto a vla-tune key, or reported as ignored; a value
vla-tune cannot honour is a ConfigError naming the key and the value. What can only be
checked once the model is known (image size and statistics, the model folder) is checked
against the sweep's final values, after `--set` and the CLI options.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainables.config import ConfigError, check_positive_int

PRECISIONS_IN = {
    "16-mixed": "fp16", "16": "fp16", "16-true": "fp16",
    "bf16": "bf16", "bf16-mixed": "bf16", "bf16-true": "bf16",
    "32": "fp32", "32-true": "fp32",
}  # fmt: skip
PRECISIONS_OUT = {"fp16": "16-mixed", "bf16": "bf16", "fp32": "32", "auto": "bf16"}
SCHEDULES = ("constant", "cosine")

# (section, key) -> vla-tune key, for values that map one to one. Section "" is top level.
DIRECT = {
    ("", "learning_rate"): "learning_rate",
    ("", "min_lr_scale"): "min_lr_scale",
    ("", "weight_decay"): "weight_decay",
    ("", "warmup_epochs"): "warmup_ratio",
    ("", "seed"): "seed",
    ("train_setup", "train_vision"): "train_vision",
    ("train_setup", "freeze_backbone"): "freeze_backbone",
    ("train_setup", "train_text_embedding"): "train_text_embedding",
    ("train_setup", "lora_enable"): "lora_enable",
    ("train_setup", "lora_r"): "lora_r",
    ("train_setup", "lora_alpha"): "lora_alpha",
    ("train_setup", "lora_dropout"): "lora_dropout",
    ("train_setup", "gradient_checkpointing"): "gradient_checkpointing",
    ("act_head", "hidden_size"): "head_hidden",
    ("act_head", "num_layers"): "head_layers",
    ("trainer", "max_epochs"): "max_epochs",
}
# Keys read by the special cases in `from_robovlms` below.
SPECIAL = {
    "": {"window_size", "fwd_pred_next_n", "batch_size", "scheduler", "warmup_steps",
         "image_size", "image_mean", "image_std", "model_path", "norm_action", "norm_min",
         "norm_max", "optimizer", "parent"},
    "train_setup": {"precision", "lora_bias"},
    "act_head": {"type", "action_dim", "window_size", "fwd_pred_next_n", "with_history",
                 "history_type"},
    "trainer": {"precision", "gradient_clip_val", "max_steps", "accumulate_grad_batches",
                "devices"},
}  # fmt: skip
SECTIONS = ("train_setup", "act_head", "trainer")


@dataclass
class Imported:
    """What a RoboVLMs file contributes to a sweep."""

    flat: dict[str, Any]  # vla-tune keys -> values, the file's layer of the base config
    ignored: list[str]  # keys of the file vla-tune has no use for (dotted)
    notes: list[str] = field(default_factory=list)
    devices: int = 1  # trainer.devices as a count: the global batch counts them
    max_steps: int | None = None  # trainer.max_steps when set: a budget the sweep replaces


def load_robovlms(path: str | Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The file with its `parent` chain merged underneath (relative to the file), as
    RoboVLMs' own loader does; the result has no `parent` key."""
    path = Path(path).resolve()
    if path in seen:
        raise ConfigError(f"{path}: parent: loops back to itself")
    try:
        raw = json.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON (line {exc.lineno}): {exc.msg}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a JSON object at the top level")
    parent = raw.pop("parent", None)
    if parent is None:
        return raw
    if not isinstance(parent, str):
        raise ConfigError(f"{path}: parent: expected a file name, got {parent!r}")
    return deep_merge(load_robovlms(path.parent / parent, (*seen, path)), raw)


def deep_merge(under: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(under)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def precision_of(where: str, value: Any) -> str:
    text = str(value).lower()
    if text not in PRECISIONS_IN:
        raise _refuse(where, value, f"not a precision vla-tune knows ({list(PRECISIONS_IN)})")
    return PRECISIONS_IN[text]


def device_count(value: Any) -> int:
    """trainer.devices as Lightning reads it: a count or a list of device ids."""
    if value is None:
        return 1
    if isinstance(value, list) and value:
        return len(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    raise ConfigError(
        f"trainer.devices: {value!r}: give a count or a list of ids (the global batch is "
        "batch_size x accumulate_grad_batches x devices)"
    )


def _refuse(key: str, value: Any, why: str) -> ConfigError:
    return ConfigError(f"{key}: {value!r}: {why}")


def from_robovlms(raw: dict[str, Any]) -> Imported:
    """Map a merged RoboVLMs config onto vla-tune keys (pure: no file or model is read)."""
    sections = {"": raw}
    for name in SECTIONS:
        value = raw.get(name) or {}
        if not isinstance(value, dict):
            raise _refuse(name, value, "expected an object")
        sections[name] = value
    ignored = [k for k in raw if k not in SPECIAL[""] and ("", k) not in DIRECT]
    ignored = [k for k in ignored if k not in SECTIONS]
    for name in SECTIONS:
        known = SPECIAL[name] | {k for s, k in DIRECT if s == name}
        ignored += [f"{name}.{k}" for k in sections[name] if k not in known]

    flat = {vla: sections[s][k] for (s, k), vla in DIRECT.items() if sections[s].get(k) is not None}
    top, setup = raw, sections["train_setup"]
    head, trainer = sections["act_head"], sections["trainer"]
    notes: list[str] = []
    for key in ("window_size", "fwd_pred_next_n"):  # the top level wins, as in RoboVLMs
        value = top.get(key, head.get(key))
        if value is not None:
            flat[key] = value
    if "scheduler" in top:
        if top["scheduler"] not in SCHEDULES:
            raise _refuse("scheduler", top["scheduler"], f"vla-tune schedules {list(SCHEDULES)}")
        flat["lr_schedule"] = top["scheduler"]
    if top.get("warmup_steps"):
        raise _refuse("warmup_steps", top["warmup_steps"], "vla-tune warms up by warmup_epochs")
    if top.get("optimizer") not in (None, "adamw", "AdamW"):
        notes.append(f"optimizer {top['optimizer']!r}: RoboVLMs trains with AdamW whatever "
                     "it says, and so does vla-tune")  # fmt: skip
    if top.get("model_path") is not None:
        flat["model"] = top["model_path"]
    _norm(top, flat)

    for key, where in (("precision", "trainer"), ("precision", "train_setup")):
        value = sections[where].get(key)
        if value is not None and "precision" not in flat:  # trainer's wins
            flat["precision"] = precision_of(f"{where}.precision", value)
    if setup.get("lora_bias", "none") != "none":
        raise _refuse("train_setup.lora_bias", setup["lora_bias"], "vla-tune trains no biases")
    if head.get("type", "LSTMDecoder") != "LSTMDecoder":
        raise _refuse("act_head.type", head["type"], "vla-tune's head is the LSTMDecoder")
    if head.get("with_history", True) is not True:
        raise _refuse("act_head.with_history", head["with_history"], "vla-tune's head uses it")
    if head.get("history_type", "post") != "post":
        raise _refuse(
            "act_head.history_type", head["history_type"], "vla-tune's head reads history post"
        )
    if "gradient_clip_val" in trainer:
        flat["grad_clip"] = trainer["gradient_clip_val"] or 0.0
    max_steps = trainer.get("max_steps")
    if max_steps in (None, -1):
        max_steps = None
    else:  # Lightning stops at whichever of max_epochs/max_steps comes first
        if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
            raise _refuse("trainer.max_steps", max_steps, "expected -1 (none) or a step count")
        notes.append(
            f"trainer.max_steps {max_steps}: not used, a sweep's budget is epochs (each "
            "trial's optimizer steps are below); the export writes trainer.max_steps: -1 so "
            "that RoboVLMs trains the epochs the sweep chose"
        )
    devices = device_count(trainer.get("devices"))
    if top.get("batch_size") is not None:
        accumulate = trainer.get("accumulate_grad_batches") or 1
        flat["batch_size"] = _positive_int("batch_size", top["batch_size"]) * _positive_int(
            "trainer.accumulate_grad_batches", accumulate
        ) * devices  # fmt: skip
    return Imported(flat, ignored, notes, devices=devices, max_steps=max_steps)


def _positive_int(key: str, value: Any) -> int:
    """`value`, checked as every config's integers are, failing as a ConfigError."""
    try:
        check_positive_int(key, value)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return value


def _norm(top: dict[str, Any], flat: dict[str, Any]) -> None:
    """RoboVLMs clips actions to [norm_min, norm_max] and scales to [-1, 1]; vla-tune does
    the same with a symmetric bound."""
    if "norm_action" not in top and "norm_max" not in top:
        return
    if top.get("norm_action", True) is not True:
        raise _refuse("norm_action", top["norm_action"], "vla-tune always normalizes actions")
    low, high = top.get("norm_min"), top.get("norm_max")
    if high is None:
        return
    if low is not None and low != -high:
        raise _refuse("norm_min", low, f"vla-tune needs a bound symmetric to norm_max {high}")
    flat["action_bound"] = high


def check_final(raw: dict[str, Any], final: dict[str, Any], model_given: bool) -> list[str]:
    """Checks that need the sweep's final values (the model after --model / --set):
    the model folder, image size and statistics, action dims, fp16 without CUDA."""
    from trainables.mobile_vla.configuration_mobile_vla import ModelConfig
    from trainables.mobile_vla.dataset import DataConfig

    notes = []
    model_path = raw.get("model_path")
    if model_path is not None and not model_given and not Path(model_path).is_absolute():
        if not Path(model_path).exists():
            raise _refuse("model_path", model_path, "no such folder here (give --model)")
    model = ModelConfig.from_dict({k: v for k, v in final.items() if k.startswith("tiny_")})
    model.model = str(final.get("model", model.model))
    notes += _check_images(raw, model)
    dims = final.get("action_dims", DataConfig.__dataclass_fields__["action_dims"].default)
    head_dim = (raw.get("act_head") or {}).get("action_dim")
    if head_dim is not None and head_dim != len(dims):
        notes.append(
            f"act_head.action_dim {head_dim}: vla-tune trains on the episodes' "
            f"{len(dims)} action dims ({', '.join(dims)})"
        )
    if final.get("precision") == "fp16":
        import torch

        if not torch.cuda.is_available():
            notes.append("precision fp16 needs a CUDA device: this machine has none (a dry "
                         "run plans it; trials here would stop)")  # fmt: skip
    return notes


def _check_images(raw: dict[str, Any], model: Any) -> list[str]:
    """image_size/mean/std against the model's own preprocessing: an error for a real
    model (the features would be wrong), a note for the tiny demo model."""
    wanted = {k: raw[k] for k in ("image_size", "image_mean", "image_std") if k in raw}
    if not wanted:
        return []
    from trainables.mobile_vla.backbone import read_image_stats

    height, width = model.image_size()
    mean, std = read_image_stats(model)
    own = {"image_size": [height, width], "image_mean": list(mean), "image_std": list(std)}
    notes = []
    for key, value in wanted.items():
        given = [value, value] if key == "image_size" and isinstance(value, int) else value
        if not _close(given, own[key]):
            if not model.is_tiny:
                raise _refuse(key, value, f"the model {model.model} preprocesses with {own[key]}")
            notes.append(f"{key} {value}: the tiny demo model uses {own[key]}")
    return notes


def _close(a: Any, b: list[float]) -> bool:
    if not isinstance(a, list) or len(a) != len(b):
        return False
    return all(isinstance(x, (int, float)) and abs(x - y) < 1e-4 for x, y in zip(a, b, strict=True))


def import_for_sweep(raw: dict[str, Any], under: dict[str, Any], over: dict[str, Any]) -> Imported:
    """The file's layer of a sweep's base config, checked against the final values:
    `under` is what the file overrides (the space's fixed), `over` what overrides it
    (--set, --model and the other CLI options)."""
    imported = from_robovlms(raw)
    model = imported.flat.get("model")
    if model is not None and "model" not in over and Path(model).exists():
        imported.flat["model"] = str(Path(model).resolve())  # trials run in other folders
    final = {**under, **imported.flat, **over}
    imported.notes += check_final(raw, final, model_given="model" in over)
    return imported
