"""Configuration of the robot-code model: a causal code LM with a LoRA adapter.

`model` is "tiny" (a small random Llama-style LM built from the `tiny_*` dims, with a
tokenizer trained on the data: for CPU runs, demos and tests) or a local directory holding
a causal LM checkout (e.g. CodeLlama-7b-Python), loaded offline with `from_pretrained`.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from trainables.config import TINY, ModelChoice, check_positive_int

# Llama's module names; other architectures take an explicit comma-separated list.
ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")
LORA_TARGET_PRESETS = {"attention": ATTENTION, "attention+mlp": ATTENTION + MLP}
# Input embeddings and output projection, trained whole (PEFT `modules_to_save`).
EMBEDDING_MODULES = ("embed_tokens", "lm_head")
_MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass
class ModelConfig(ModelChoice):
    """What to build and which parts train."""

    model: str = TINY
    lora_r: int = 16
    lora_alpha: float = 32.0
    # 0 by default: dropout draws depend on how a batch is split into micro-batches, and
    # the micro-batch must not change the result.
    lora_dropout: float = 0.0
    # "attention" (q/k/v/o), "attention+mlp" (+ gate/up/down), or module names "q_proj,v_proj"
    lora_target: str = "attention"
    # Train the token embeddings and the LM head whole, beside LoRA (PEFT modules_to_save,
    # so they are part of the adapter). None: only for the tiny model. Its weights are
    # random: frozen, its output layer maps hidden states onto arbitrary tokens and LoRA
    # cannot undo that. Measured on the demo set (1,800 records, 3 epochs, lr 2e-3, batch
    # 16, exact match on 128 validation records): LoRA alone 0.01 on attention, 0.02 on
    # attention+MLP (0.07 at r=64, lr 5e-3), val_loss ~4; with these trained 0.84 and
    # 0.85, val_loss ~0.06. A pretrained model already speaks its vocabulary: there they
    # stay frozen (a 7B model's would add ~260M parameters to the adapter).
    train_embeddings: bool | None = None
    # Recompute the causal LM's layer activations in backward (Robot-LoRA's
    # --gradient-checkpointing): less memory, about one more forward of compute.
    gradient_checkpointing: bool = False

    # the tiny model (ignored for a pretrained one)
    tiny_hidden: int = 128
    tiny_layers: int = 2
    tiny_heads: int = 4
    tiny_intermediate: int = 344  # SwiGLU width, ~8/3 x hidden as in Llama
    tiny_vocab_size: int = 512  # BPE vocabulary trained on the data (256 bytes + merges)
    tiny_max_positions: int = 1024

    @property
    def trains_embeddings(self) -> bool:
        return self.is_tiny if self.train_embeddings is None else self.train_embeddings

    def target_modules(self) -> list[str]:
        """LoRA target module names (matched by PEFT against each module name's end)."""
        if self.lora_target in LORA_TARGET_PRESETS:
            return list(LORA_TARGET_PRESETS[self.lora_target])
        return [name.strip() for name in self.lora_target.split(",") if name.strip()]

    def validate(self) -> None:
        if not isinstance(self.model, str) or not self.model:
            raise ValueError(f"model: expected 'tiny' or a local directory, got {self.model!r}")
        if not self.is_tiny and not Path(self.model).expanduser().is_dir():
            raise ValueError(f"model: {self.model!r} is neither 'tiny' nor a local directory")
        check_positive_int("lora_r", self.lora_r)
        if not self.lora_alpha > 0:
            raise ValueError(f"lora_alpha: must be > 0, got {self.lora_alpha}")
        if not 0 <= self.lora_dropout < 1:
            raise ValueError(f"lora_dropout: must be in [0, 1), got {self.lora_dropout}")
        targets = self.target_modules()
        bad = [t for t in targets if not _MODULE_NAME.match(t)]
        if not targets or bad:
            raise ValueError(
                f"lora_target: {self.lora_target!r} is not one of {list(LORA_TARGET_PRESETS)} "
                "nor a comma-separated list of module names"
            )
        if self.train_embeddings is not None and not isinstance(self.train_embeddings, bool):
            raise ValueError(
                f"train_embeddings: expected true, false or null, got {self.train_embeddings!r}"
            )
        if not isinstance(self.gradient_checkpointing, bool):
            value = self.gradient_checkpointing
            raise ValueError(f"gradient_checkpointing: expected true or false, got {value!r}")
        for key in (
            "tiny_hidden",
            "tiny_layers",
            "tiny_heads",
            "tiny_intermediate",
            "tiny_max_positions",
        ):
            check_positive_int(key, getattr(self, key))
        if self.tiny_hidden % self.tiny_heads or (self.tiny_hidden // self.tiny_heads) % 2:
            raise ValueError(
                f"tiny_hidden: {self.tiny_hidden} must split into tiny_heads={self.tiny_heads} "
                "heads of even width (rotary embeddings rotate pairs)"
            )
        if not isinstance(self.tiny_vocab_size, int) or self.tiny_vocab_size < 300:
            raise ValueError(
                f"tiny_vocab_size: expected an integer >= 300 (256 bytes + special tokens + "
                f"merges), got {self.tiny_vocab_size!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> ModelConfig:
        return cls(**json.loads(Path(path).read_text()))
