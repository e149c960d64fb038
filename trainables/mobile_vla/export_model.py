"""What `python -m tuner.export` adds for a Mobile VLA policy beyond the checkpoint files.

- `backbone/` for the tiny model: its random weights and word-level tokenizer come from
  the training instructions, so an export must carry them to load anywhere.
- `merged/` with `--merge`: the backbone with the LoRA adapter merged in, in fp16 (what
  a 16 GB Jetson loads without peft), its tokenizer, and the head in fp32. A trial that
  trained without LoRA (a full or partial fine-tune) has nothing to merge: its trained
  backbone is written the same way, so a deployment loads one form either way.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainables.mobile_vla.backbone import load_backbone, save_backbone
from trainables.mobile_vla.checkpoint import ADAPTER_DIR, CONFIG_FILE, HEAD_FILE
from trainables.mobile_vla.inference import (
    BACKBONE_DIR,
    MERGED_DIR,
    Policy,
    training_instructions,
)
from trainables.mobile_vla.trial_config import parse_config

MB = 2**20


def folder_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


@dataclass
class ExportWriter:
    """Reads what it needs first, so bad input fails before anything is written."""

    flat: dict[str, Any]
    instructions: list[str] | None  # the tiny model's tokenizer is trained on them

    def write(self, out: Path, merge: bool) -> list[str]:
        """Write the extras into `out` (which holds the copied checkpoint); return the
        lines to print."""
        lines = []
        if self.instructions is not None:
            cfg = parse_config(self.flat).model
            backbone, tokenizer = load_backbone(cfg, self.instructions)
            save_backbone(backbone, tokenizer, out / BACKBONE_DIR)
            lines.append(f"{BACKBONE_DIR}/: the tiny base backbone and its tokenizer")
        if merge:
            lines.append(write_merged(out))
        return lines


def write_merged(out: Path) -> str:
    """`merged/`: merged fp16 backbone + fp32 head; returns the sizes line."""
    policy = Policy.from_export(out, form="adapter")
    model = policy.model
    backbone = model.backbone.merge_and_unload() if model.cfg.lora_enable else model.backbone
    merged = out / MERGED_DIR
    save_backbone(backbone.half(), policy.tokenizer, merged)
    # Everything that trained in the backbone is now in its weights: the head file holds
    # only the action token and the head, and the config says so.
    cfg = dataclasses.replace(
        model.cfg,
        lora_enable=False,
        freeze_backbone=True,
        train_vision=False,
        train_text_embedding=False,
    )
    cfg.save(merged / CONFIG_FILE)
    from safetensors.torch import save_file

    head = {
        name: param.detach().float().contiguous()
        for name, param in model.named_parameters()
        if not name.startswith("backbone.")
    }
    save_file(head, merged / HEAD_FILE)
    weights = sum(folder_bytes(p) for p in merged.glob("*.safetensors") if p.name != HEAD_FILE)
    head_mb = folder_bytes(merged / HEAD_FILE) / MB
    sizes = f"{weights / 2**30:.2f} GB ({weights / MB:.1f} MB), head {head_mb:.1f} MB"
    if not model.cfg.lora_enable:  # the same files a Jetson loads, whatever trained
        return (
            f"{MERGED_DIR}/: nothing to merge (lora_enable is false: the trained weights are "
            f"the backbone's own); the trained backbone in fp16 {sizes}"
        )
    adapter = folder_bytes(out / ADAPTER_DIR)
    return f"{MERGED_DIR}/: adapter {adapter / MB:.1f} MB, merged fp16 backbone {sizes}"


def prepare_writer(flat: dict[str, Any]) -> ExportWriter:
    """The task's export_writer (trainables/task.py)."""
    tiny = parse_config(flat).model.is_tiny
    return ExportWriter(flat, training_instructions(flat) if tiny else None)
