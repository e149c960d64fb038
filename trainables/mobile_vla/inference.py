"""Run a trained policy on camera frames: `Policy.from_export(dir).predict(frames, text)`.

An export folder (written by `python -m tuner.export`) holds the trial config, the LoRA
adapter (PEFT format) and the head (without LoRA, the head file also holds the backbone
weights that trained), plus `backbone/` for the tiny model (its random weights and
tokenizer exist nowhere else) and, with `--merge`, `merged/`: the trained backbone (the
adapter merged in) in fp16, with its own head file. `from_export` loads either form
through the same code the trainable saves with (PeftModel, `load_trainable`).
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from peft import PeftModel

from trainables.mobile_vla.backbone import cast_frozen, load_backbone
from trainables.mobile_vla.checkpoint import ADAPTER_DIR, CONFIG_FILE, load_trainable
from trainables.mobile_vla.configuration_mobile_vla import ModelConfig
from trainables.mobile_vla.dataset import DataConfig, inspect_all, list_episodes
from trainables.mobile_vla.episode_format import resize_rgb
from trainables.mobile_vla.modeling_mobile_vla import MobileVLAPolicy
from trainables.mobile_vla.tokenizer import encode_instructions
from trainables.mobile_vla.trial_config import parse_config
from trainables.training_state import TRIAL_CONFIG_FILE

BACKBONE_DIR = "backbone"  # the base backbone + tokenizer, for a tiny model
MERGED_DIR = "merged"  # backbone with the LoRA merged in (fp16) + its head
FORMS = ("auto", "adapter", "merged")
COLORS = ("rgb", "bgr")


class ExportError(ValueError):
    """A folder that is not a usable export; the message names the file."""


def training_instructions(flat: dict[str, Any]) -> list[str]:
    """The instructions a tiny model's tokenizer was trained on: read from the episode
    files of the trial's data_dir (no pixels), exactly as the trial resolved them."""
    cfg = parse_config(flat).data
    _, instructions, errors = inspect_all(list_episodes(cfg.data_dir, cfg.pattern), cfg)
    if errors and not cfg.skip_bad:
        raise ExportError(str(errors[0]))
    return instructions


def base_backbone(cfg: ModelConfig, folder: Path, flat: dict[str, Any]):
    """(Kosmos2Model, tokenizer): the export's own copy, else the tiny model rebuilt from
    the training instructions, else the pretrained model the trial started from."""
    if (folder / BACKBONE_DIR).is_dir():
        return load_backbone(dataclasses.replace(cfg, model=str(folder / BACKBONE_DIR)))
    return load_backbone(cfg, training_instructions(flat) if cfg.is_tiny else None)


def read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ExportError(f"{path}: missing (is this a vla-tune export or checkpoint?)")
    return json.loads(path.read_text())


class Policy:
    """A trained Mobile VLA policy for inference, on one device.

    `predict` takes the robot's last frames (RGB by default; `color="bgr"` for frames as
    the collector and OpenCV give them) at any size and returns the action chunk in the
    original units (m/s, rad/s): (fwd_pred_next_n, action_dim), row 0 = the action now.
    """

    def __init__(self, model: MobileVLAPolicy, tokenizer: Any, flat: dict[str, Any]):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.data: DataConfig = parse_config(flat).data
        self.window_size = self.data.window_size
        self.action_names = self.data.action_dims
        self.action_bound = self.data.action_bound
        self.image_size = model.image_size()
        self.device = model.action_token.device

    # -- loading

    @classmethod
    def from_checkpoint(
        cls, checkpoint: str | Path, flat: dict[str, Any] | None = None, device: str = "cpu"
    ) -> Policy:
        """A trial checkpoint (or an export's adapter form): base backbone + PEFT adapter
        + head. `flat` is the trial config (default: the folder's trial_config.json)."""
        folder = Path(checkpoint)
        flat = flat if flat is not None else read_json(folder / TRIAL_CONFIG_FILE)
        cfg = ModelConfig.from_dict(read_json(folder / CONFIG_FILE), ignore_unknown=False)
        backbone, tokenizer = base_backbone(cfg, folder, flat)
        if cfg.lora_enable:
            if not (folder / ADAPTER_DIR).is_dir():
                raise ExportError(f"{folder / ADAPTER_DIR}: missing (lora_enable is true)")
            with warnings.catch_warnings():
                # peft 0.21 reads transformers' deprecated `is_gradient_checkpointing`.
                warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
                backbone = PeftModel.from_pretrained(backbone, folder / ADAPTER_DIR)
        model = MobileVLAPolicy(cfg, backbone)
        load_trainable(model, folder)
        return cls(model.to(device), tokenizer, flat)

    @classmethod
    def from_export(cls, folder: str | Path, device: str = "cpu", form: str = "auto") -> Policy:
        """Load an export folder. form "auto": the merged backbone when there is one."""
        folder = Path(folder)
        if form not in FORMS:
            raise ValueError(f"form: {form!r} not one of {list(FORMS)}")
        if not folder.is_dir():
            raise ExportError(f"{folder}: not a folder")
        merged = folder / MERGED_DIR
        if form == "merged" or (form == "auto" and merged.is_dir()):
            return cls.from_merged(merged, read_json(folder / TRIAL_CONFIG_FILE), device)
        return cls.from_checkpoint(folder, device=device)

    @classmethod
    def from_merged(cls, merged: Path, flat: dict[str, Any], device: str = "cpu") -> Policy:
        """The merged fp16 backbone: fp32 on a CPU (fp16 matmuls there are slow), fp16
        weights under autocast on a GPU."""
        cfg = dataclasses.replace(ModelConfig.load(merged / CONFIG_FILE), model=str(merged))
        backbone, tokenizer = load_backbone(cfg)
        model = MobileVLAPolicy(cfg, backbone)
        load_trainable(model, merged)
        model.to(device)
        if model.action_token.device.type == "cuda":
            cast_frozen(model, torch.float16)
        return cls(model, tokenizer, flat)

    # -- inference

    def prepare(self, frames: Sequence[np.ndarray] | np.ndarray, color: str) -> torch.Tensor:
        """Frames (T, H, W, 3) uint8 in `color` -> (T, h, w, 3) uint8 RGB at the model's size."""
        if color not in COLORS:
            raise ValueError(f"color: {color!r} not one of {list(COLORS)}")
        frames = [np.asarray(f) for f in frames]
        if not frames or any(
            f.dtype != np.uint8 or f.ndim != 3 or f.shape[-1] != 3 for f in frames
        ):
            raise ValueError("frames: expected one or more (H, W, 3) uint8 images")
        rgb = [f[..., ::-1] if color == "bgr" else f for f in frames]
        resized = np.stack([resize_rgb(f, self.image_size) for f in rgb])
        return torch.from_numpy(resized).to(self.device)

    @torch.no_grad()
    def features(self, pixels: torch.Tensor, instruction: str) -> torch.Tensor:
        """Each frame's action-token feature (T, hidden): a frame's feature does not
        depend on the frames around it, so an episode's frames run once."""
        ids, mask = encode_instructions(self.tokenizer, [instruction] * len(pixels))
        ids, mask = ids.to(self.device), mask.to(self.device)
        with torch.autocast(self.device.type, torch.float16, enabled=self.device.type == "cuda"):
            return self.model.text_features(self.model.encode_images(pixels), ids, mask)

    @torch.no_grad()
    def predict(
        self, frames: Sequence[np.ndarray] | np.ndarray, instruction: str, color: str = "rgb"
    ) -> np.ndarray:
        """The last 1..window_size frames (oldest first) -> (fwd, action_dim) chunk for
        the newest frame, in original units. Fewer frames than a window (an episode's
        start) is what training saw at a window's first positions."""
        if not 1 <= len(frames) <= self.window_size:
            raise ValueError(f"frames: expected 1 to {self.window_size} frames, got {len(frames)}")
        features = self.features(self.prepare(frames, color), instruction)
        chunk = self.model.head(features[None])[0, -1]
        return chunk.float().cpu().numpy() * self.action_bound

    @torch.no_grad()
    def predict_episode(
        self, frames: Sequence[np.ndarray] | np.ndarray, instruction: str, color: str = "rgb"
    ) -> np.ndarray:
        """What `predict` returns at every frame of an episode, (T, fwd, action_dim), with
        each frame's backbone pass run once."""
        features = self.features(self.prepare(frames, color), instruction)
        chunks = []
        for t in range(len(features)):
            start = max(0, t - self.window_size + 1)
            chunks.append(self.model.head(features[None, start : t + 1])[0, -1])
        return torch.stack(chunks).float().cpu().numpy() * self.action_bound
