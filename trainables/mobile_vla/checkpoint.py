"""Save and load what a trial trains: the LoRA adapter (PEFT's own format), the
non-LoRA trainable weights (action token, head, any unfrozen backbone part) and the model
config, in megabytes. The frozen backbone is never written: it is rebuilt from the config.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from peft import PeftModel
from safetensors.torch import load_file, save_file

from trainables.adapters import load_adapter
from trainables.mobile_vla.backbone import is_lora_parameter
from trainables.mobile_vla.modeling_mobile_vla import MobileVLAPolicy

ADAPTER_DIR = "adapter"  # PEFT's own format, loadable with PeftModel.from_pretrained
HEAD_FILE = "policy_head.safetensors"  # action token, head, trainable non-LoRA backbone
CONFIG_FILE = "model_config.json"


def trainable_state_dict(policy: MobileVLAPolicy) -> dict[str, torch.Tensor]:
    """Trainable weights that are not LoRA: action token, head, and any unfrozen backbone
    part (train_vision, train_text_embedding, freeze_backbone false)."""
    return {
        name: param.detach().contiguous()
        for name, param in policy.named_parameters()
        if param.requires_grad and not is_lora_parameter(name)
    }


def save_trainable(policy: MobileVLAPolicy, directory: str | os.PathLike) -> None:
    """Everything that trains, in megabytes:
    `adapter/` (PEFT's own format), `policy_head.safetensors`, `model_config.json`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if isinstance(policy.backbone, PeftModel):
        # save_embedding_layers=False: "auto" may ask the hub whether the vocab changed.
        policy.backbone.save_pretrained(directory / ADAPTER_DIR, save_embedding_layers=False)
    save_file({k: v.cpu() for k, v in trainable_state_dict(policy).items()}, directory / HEAD_FILE)
    policy.cfg.save(directory / CONFIG_FILE)


def load_trainable(policy: MobileVLAPolicy, directory: str | os.PathLike) -> None:
    """Load what `save_trainable` wrote into a policy built with the same config."""
    directory = Path(directory)
    if isinstance(policy.backbone, PeftModel):
        keys = ("r", "lora_alpha", "target_modules")
        load_adapter(policy.backbone, directory / ADAPTER_DIR, keys, owner="policy")
    head = load_file(directory / HEAD_FILE, device=str(policy.action_token.device))
    expected = set(trainable_state_dict(policy))
    if set(head) != expected:
        raise ValueError(
            f"{directory / HEAD_FILE}: holds {sorted(set(head) - expected)} extra and misses "
            f"{sorted(expected - set(head))}; was it saved with another train setup?"
        )
    policy.load_state_dict(head, strict=False)
