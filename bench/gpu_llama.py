"""bench/gpu.py's Robot-LoRA measurement: a causal LM of CodeLlama-7B's shape.

Random weights built on the device in bf16 (no 13 GB checkout to write or read), LoRA
from the robot_code task's own `add_lora`, steps through the shared Trainer with the
task's loss. Measured: peak memory and tokens/s, gradient checkpointing off and on.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from gpu_common import timed_steps
from transformers import LlamaConfig, LlamaForCausalLM

from trainables.gradient_checkpointing import (
    disable_gradient_checkpointing,
    enable_gradient_checkpointing,
)
from trainables.robot_code.configuration_robot_code import ModelConfig
from trainables.robot_code.modeling_robot_code import add_lora
from trainables.robot_code.trainable import causal_lm_loss
from trainables.training import TrainConfig, Trainer, plan_batches

# CodeLlama-7b-Python's shape (its config.json): Llama 2 7B with a 32016-token vocabulary.
CODELLAMA_7B = dict(
    hidden_size=4096,
    intermediate_size=11008,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=32,
    vocab_size=32016,
    max_position_embeddings=16384,
    rope_theta=1e6,
)
SMALL = dict(
    hidden_size=128,
    intermediate_size=344,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=4,
    vocab_size=512,
    max_position_embeddings=512,
)


@dataclass
class LlamaResult:
    checkpointing: bool
    peak_mb: float | None
    tokens_per_s: float
    params_b: float  # billions of parameters of the base


def build(shape: dict, device: torch.device, dtype: torch.dtype, r: int, alpha: float):
    """Base of `shape` with random weights made on `device`, then the task's LoRA."""
    config = LlamaConfig(**shape, tie_word_embeddings=False, use_cache=False)
    torch.manual_seed(0)
    with torch.device(device):
        base = LlamaForCausalLM._from_config(config, dtype=dtype)
    lora = ModelConfig(model="tiny", lora_r=r, lora_alpha=alpha, train_embeddings=False)
    return add_lora(base, lora)


def llama_rates(
    shape: dict, device: torch.device, precision: str, batch: int, tokens: int, steps: int
) -> list[LlamaResult]:
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    model = build(shape, device, dtype, r=32, alpha=64.0)
    params = sum(p.numel() for p in model.parameters()) / 1e9
    cfg = TrainConfig(batch_size=batch, micro_batch_size=batch, precision=precision)
    cfg.device = str(device)
    trainer = Trainer(model, cfg, plan_batches(cfg, batch))
    loss_fn = causal_lm_loss(model)
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(3, shape["vocab_size"], (batch, tokens), generator=generator)
    micro = {
        "input_ids": ids.to(device),
        "attention_mask": torch.ones_like(ids).to(device),
        "labels": ids.to(device),
    }
    results = []
    for on in (False, True):
        if on:
            enable_gradient_checkpointing(model.get_base_model())
        else:
            disable_gradient_checkpointing(model.get_base_model())
        step = [lambda: trainer.step([micro], loss_fn, lambda b: batch * (tokens - 1))]
        timing = timed_steps(device, step * (steps + 1))
        results.append(LlamaResult(on, timing.peak_mb, batch * tokens / timing.median, params))
    return results
