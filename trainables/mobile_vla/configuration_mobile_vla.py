"""Configuration of the Mobile VLA policy: a Kosmos-2 backbone with a LoRA adapter and an
LSTM action head, in RoboVLMs' vocabulary (the `train_setup` keys keep their names, so a
RoboVLMs config maps onto this one key by key).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from trainables.config import TINY, ModelChoice, check_positive_int

LORA_TARGETS = ("text", "text+vision", "all_linear")
LOSSES = ("huber", "mse")


@dataclass
class ModelConfig(ModelChoice):
    """What to build and what to train.

    `model` is "tiny" (a small random Kosmos-2 built from the `tiny_*` dims, for CPU runs
    and tests) or a local directory / hub id loaded with `from_pretrained`.
    """

    model: str = TINY
    window_size: int = 8
    fwd_pred_next_n: int = 10
    action_dim: int = 2

    # RoboVLMs train_setup
    lora_enable: bool = True
    lora_r: int = 16
    lora_alpha: float = 32.0
    # 0 by default: dropout draws depend on how a batch is split into micro-batches, and
    # the micro-batch must not change the result.
    lora_dropout: float = 0.0
    lora_target: str = "text"  # "text" | "text+vision" | "all_linear"
    freeze_backbone: bool = True
    train_vision: bool = False
    train_text_embedding: bool = False
    # Recompute the activations of the towers that run in backward (the text model; the
    # vision tower when something in it trains): less memory, about one more forward.
    gradient_checkpointing: bool = False

    # action head
    head_hidden: int | None = None  # LSTM width; None: the backbone's width, at most 1024
    # LSTM depth; None: 4 (RoboVLMs' LSTMDecoder) on a real-size backbone (width >= 512),
    # 1 on a small one, where a 4-deep LSTM over random 64-wide features stays at the
    # mean action for epochs (measured on demo data: val_loss 0.152 flat vs 0.108 after
    # 5 epochs).
    head_layers: int | None = None
    loss: str = "huber"  # "huber" | "mse"
    huber_delta: float = 1.0

    # the tiny backbone (ignored for a pretrained one)
    tiny_hidden: int = 64
    tiny_layers: int = 2  # per tower
    tiny_heads: int = 4
    tiny_image_size: int = 56
    tiny_patch_size: int = 14
    tiny_latent_query_num: int = 8  # image tokens per frame (64 in kosmos-2-patch14-224)
    tiny_max_positions: int = 256

    @property
    def is_local(self) -> bool:
        """A directory on disk (`~` expanded): load it offline, never touching the hub."""
        return not self.is_tiny and Path(self.model).expanduser().is_dir()

    @property
    def source(self) -> str:
        """What `from_pretrained` is given: the directory with `~` expanded, else the hub id
        (transformers does not expand `~`)."""
        return str(Path(self.model).expanduser()) if self.is_local else self.model

    def check_found(self) -> None:
        """A path that is not a directory here fails now, in one message, instead of as a
        hub lookup of a name that is no hub id."""
        looks_like_path = self.model.startswith((".", "/", "~")) or self.model.count("/") > 1
        if not self.is_tiny and not self.is_local and looks_like_path:
            raise ValueError(f"model: {self.model} is not a folder on this machine")

    def image_side_trains(self) -> str | None:
        """Why a frame's image tokens change during training, or None when they cannot
        (vision tower and image-to-text connector frozen: they can be computed once)."""
        if self.train_vision:
            return "train_vision is true"
        if self.lora_enable and self.lora_target != "text":
            return f"lora_target {self.lora_target} adapts the vision side"
        if not self.freeze_backbone:
            return "freeze_backbone is false (the image-to-text connector trains)"
        return None

    def head_width(self, backbone_width: int) -> int:
        """The LSTM head's width: head_hidden, else the backbone's width capped at 1024."""
        return self.head_hidden or min(backbone_width, 1024)

    def lstm_layers(self, backbone_width: int) -> int:
        if self.head_layers is not None:
            return self.head_layers
        return 4 if backbone_width >= 512 else 1

    def validate(self) -> None:
        if not isinstance(self.model, str) or not self.model:
            raise ValueError(f"model: expected 'tiny' or a directory / hub id, got {self.model!r}")
        for key in ("window_size", "fwd_pred_next_n", "action_dim", "lora_r"):
            check_positive_int(key, getattr(self, key))
        for key in ("head_hidden", "head_layers"):
            if getattr(self, key) is not None:
                check_positive_int(key, getattr(self, key))
        if not self.lora_alpha > 0:
            raise ValueError(f"lora_alpha: must be > 0, got {self.lora_alpha}")
        if not 0 <= self.lora_dropout < 1:
            raise ValueError(f"lora_dropout: must be in [0, 1), got {self.lora_dropout}")
        if self.lora_target not in LORA_TARGETS:
            raise ValueError(f"lora_target: {self.lora_target!r} not one of {list(LORA_TARGETS)}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss: {self.loss!r} not one of {list(LOSSES)}")
        if not self.huber_delta > 0:
            raise ValueError(f"huber_delta: must be > 0, got {self.huber_delta}")
        for key in (
            "lora_enable",
            "freeze_backbone",
            "train_vision",
            "train_text_embedding",
            "gradient_checkpointing",
        ):
            if not isinstance(getattr(self, key), bool):
                raise ValueError(f"{key}: expected true or false, got {getattr(self, key)!r}")
        for key in (
            "tiny_hidden",
            "tiny_layers",
            "tiny_heads",
            "tiny_image_size",
            "tiny_patch_size",
            "tiny_latent_query_num",
            "tiny_max_positions",
        ):
            check_positive_int(key, getattr(self, key))
        if self.tiny_hidden % self.tiny_heads:
            raise ValueError(
                f"tiny_hidden: {self.tiny_hidden} is not divisible by tiny_heads={self.tiny_heads}"
            )
        if self.tiny_image_size % self.tiny_patch_size:
            raise ValueError(
                f"tiny_image_size: {self.tiny_image_size} is not a multiple of "
                f"tiny_patch_size={self.tiny_patch_size}"
            )

    def image_size(self) -> tuple[int, int]:
        """(height, width) the vision tower takes; the data must be resized to it.

        For a pretrained backbone this reads its config (a file read, no weights).
        """
        if self.is_tiny:
            return (self.tiny_image_size, self.tiny_image_size)
        self.check_found()
        from transformers import Kosmos2Config

        try:
            config = Kosmos2Config.from_pretrained(self.source, local_files_only=self.is_local)
        except OSError as exc:
            raise ValueError(f"model: cannot read the config of {self.model!r}: {exc}") from exc
        size = config.vision_config.image_size
        return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], ignore_unknown: bool = True) -> ModelConfig:
        """Build from a flat trial config; keys that are not model keys are skipped
        (or refused, with ignore_unknown=False)."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown and not ignore_unknown:
            raise ValueError(f"unknown model config keys: {unknown}")
        return cls(**{k: v for k, v in values.items() if k in names})

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> ModelConfig:
        return cls.from_dict(json.loads(Path(path).read_text()), ignore_unknown=False)
