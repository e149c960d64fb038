"""The size of one trial checkpoint, known before any trial runs.

A checkpoint stores every trainable parameter in fp32 (the adapter, the head and any
unfrozen backbone part) and AdamW's two moments for each: 12 bytes per trainable
parameter, plus kilobytes of config and scheduler state. The policy is built on PyTorch's
meta device, so counting them costs no memory and reads no weights.
"""

from __future__ import annotations

from typing import Any

import torch

from trainables.mobile_vla.trial_config import parse_config

BYTES_PER_TRAINABLE = 4 * 3  # fp32 weight + AdamW exp_avg + exp_avg_sq


def trainable_parameters(flat: dict[str, Any], instructions: list[str]) -> int:
    """The trainable parameters of the configuration's policy (weights never loaded)."""
    from transformers import Kosmos2Config, Kosmos2Model

    from trainables.mobile_vla.backbone import tiny_kosmos2_config
    from trainables.mobile_vla.modeling_mobile_vla import MobileVLAPolicy, parameter_counts
    from trainables.mobile_vla.tokenizer import train_instruction_tokenizer

    cfg = parse_config(flat).model
    if cfg.is_tiny:  # its vocabulary is trained on the instructions
        config = tiny_kosmos2_config(cfg, len(train_instruction_tokenizer(instructions)))
    else:
        config = Kosmos2Config.from_pretrained(cfg.source, local_files_only=cfg.is_local)
    with torch.device("meta"):
        policy = MobileVLAPolicy(cfg, Kosmos2Model(config))
    return parameter_counts(policy)["trainable"]


def checkpoint_bytes(flat: dict[str, Any], data: Any) -> int:
    return BYTES_PER_TRAINABLE * trainable_parameters(flat, data.instructions)
