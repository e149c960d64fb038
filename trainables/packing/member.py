"""A pack's shared frozen base, and its members: Mobile VLA trials built on that base.

A member is a `MobileVLATrial` itself (its plan, Trainer, batches, validation and
checkpoint format are the unpacked trial's own); only its policy is built on a copy of
the pack's Kosmos-2 that holds the very same frozen tensors, so K members hold one base.
Its LoRA layers are peft's, in its own peft model: a packed checkpoint is the trial's.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from peft.tuners.lora import LoraLayer
from transformers import Kosmos2Model, PreTrainedTokenizerBase

from trainables.gradient_checkpointing import enable_gradient_checkpointing
from trainables.mobile_vla.backbone import LORA_TARGET_PATTERNS, load_backbone
from trainables.mobile_vla.configuration_mobile_vla import ModelConfig
from trainables.mobile_vla.dataset import DataConfig, MobileVLAData
from trainables.mobile_vla.image_features import weights_key
from trainables.mobile_vla.modeling_mobile_vla import MobileVLAPolicy
from trainables.mobile_vla.trainable import MobileVLATrial
from trainables.mobile_vla.trial_config import TrialConfig, parse_config
from trainables.packing.lora import MemberRNG, PackedLoRALinear, Segments, pack_linears, shared_copy
from trainables.training import resolve_device

PACKING_TASK = "mobile_vla"


class PackError(ValueError):
    """A config that cannot join this pack; the message names the key."""


# What the shared base, its data and its numerics follow: every member must agree.
# Every data key but the decode workers; the backbone; device and precision.
BASE_KEYS = {
    "data": tuple(f.name for f in dataclasses.fields(DataConfig) if f.name != "workers"),
    "model": (
        "model",
        "window_size",
        "gradient_checkpointing",
        *(f.name for f in dataclasses.fields(ModelConfig) if f.name.startswith("tiny_")),
    ),
    "train": ("device", "precision"),
}


def unpackable(config: dict[str, Any], task: str = PACKING_TASK) -> str | None:
    """None when a trial of `task` with this flat config can be packed, else why not (one
    line). A config that does not parse raises its ConfigError."""
    if task != PACKING_TASK:
        return f"task {task} does not pack (only {PACKING_TASK} trials share a base)"
    model = parse_config(config).model
    if not model.lora_enable:
        return "a full fine-tune (lora_enable: false) trains the base itself: nothing to share"
    if not model.freeze_backbone:
        return "freeze_backbone: false trains the base itself: nothing to share"
    if model.train_vision:
        return "train_vision: true trains the vision tower itself: nothing to share"
    if model.train_text_embedding:
        return "train_text_embedding: true trains the base's embeddings: nothing to share"
    if model.lora_dropout > 0 and model.gradient_checkpointing:
        return (
            "lora_dropout with gradient_checkpointing: a pack's recomputed forward would "
            "draw other dropout masks than the trial alone"
        )
    return None


def base_mismatch(base: TrialConfig, cfg: TrialConfig) -> PackError | None:
    """The first base-defining key where `cfg` differs from the pack's, as a PackError."""
    for section, keys in BASE_KEYS.items():
        for key in keys:
            mine, theirs = getattr(getattr(base, section), key), getattr(getattr(cfg, section), key)
            if mine != theirs:
                return PackError(
                    f"{key}: {theirs!r} differs from this pack's {mine!r} (another base)"
                )
    return None


@dataclass
class Base:
    """The frozen Kosmos-2 every member shares, on its device, and the packed copy of it
    whose text model runs all members' rows at once."""

    cfg: TrialConfig  # the first member's: BASE_KEYS of every member equal its
    kosmos: Kosmos2Model  # pristine: each member's policy wraps a shared copy of it
    tokenizer: PreTrainedTokenizerBase
    packed: Kosmos2Model  # a shared copy with PackedLoRALinear in the text model
    linears: dict[str, PackedLoRALinear]
    segments: Segments
    device: torch.device
    weights: str | None = None  # the image side's weights_key, taken before any cast

    def attach(self, key: str, policy: MobileVLAPolicy, rng: MemberRNG) -> None:
        """Route the packed linears' rows of `key` through the member's own LoRA layers."""
        for name, linear in self.linears.items():
            layer = policy.kosmos.get_submodule(name)
            if isinstance(layer, LoraLayer):
                linear.attach(key, layer, rng)

    def detach(self, key: str) -> None:
        for linear in self.linears.values():
            linear.detach(key)


def build_base(cfg: TrialConfig, data: MobileVLAData) -> Base:
    """Load the backbone once (drawing no member's random numbers), on the device."""
    with torch.random.fork_rng(devices=[]):
        kosmos, tokenizer = load_backbone(cfg.model, data.instructions)
    device = resolve_device(cfg.train.device)
    kosmos.requires_grad_(False).to(device)
    segments = Segments()
    packed = shared_copy(kosmos)
    linears = pack_linears(packed, LORA_TARGET_PATTERNS["text"], segments)
    if cfg.model.gradient_checkpointing:
        enable_gradient_checkpointing(packed.text_model)
    return Base(cfg, kosmos, tokenizer, packed, linears, segments, device)


class PackMember(MobileVLATrial):
    """A Mobile VLA trial whose policy wraps a shared copy of the pack's base."""

    def __init__(self, cfg: TrialConfig, data: MobileVLAData, base: Base):
        self.base = base
        super().__init__(cfg, data)

    def make_policy(self) -> tuple[MobileVLAPolicy, PreTrainedTokenizerBase]:
        # As build_policy: the backbone draws no random numbers, the LoRA and head do.
        return MobileVLAPolicy(self.cfg.model, shared_copy(self.base.kosmos)), self.base.tokenizer

    def image_weights_key(self) -> str:
        if self.base.weights is None:  # the first member: the weights are still fp32
            self.base.weights = weights_key(self.policy)
        return self.base.weights

    def measure_micro_batch(self) -> None:
        """Not per member: the pack's rows are the sum of its members' frames caps."""
