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


@dataclass
class BudgetFit:
    budget_gb: float
    checkpointing: bool
    micro_batch: int  # sequences per micro-batch the probe chose; 0: one does not fit
    batch: int
    tokens: int  # per sequence
    peak_mb: float | None
    tokens_per_s: float | None


def llama_in_budget(
    shape: dict, device: torch.device, budget_gb: float, batch: int, tokens: int, steps: int
) -> BudgetFit:
    """The robot_code task's probe (`largest_fitting`, halving from the whole batch to one
    sequence) on a base of `shape` with the task's default LoRA, the allocator capped at
    `budget_gb` (a card of that size): checkpointing off first, on when one sequence does
    not fit; then timed steps at the chosen micro-batch, still capped."""
    from contextlib import nullcontext

    from gpu_common import GB, memory_budget

    from trainables.micro_batch import largest_fitting, try_micro_batch
    from trainables.training import TrainingError, largest_divisor

    precision = "bf16" if device.type == "cuda" else "fp32"
    task = ModelConfig(model="tiny")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    model = build(shape, device, dtype, r=task.lora_r, alpha=task.lora_alpha)
    cfg = TrainConfig(batch_size=batch, precision=precision, device=str(device))
    trainer = Trainer(model, cfg, plan_batches(cfg, batch))
    loss_fn = causal_lm_loss(model)
    ids = torch.randint(3, shape["vocab_size"], (batch, tokens), generator=torch.Generator())
    whole = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}

    def micro(size: int) -> dict:
        return {k: v[:size].to(device) for k, v in whole.items()}

    capped = memory_budget(device, budget_gb * GB) if device.type == "cuda" else nullcontext()
    with capped:
        for checkpointing in (False, True):
            if checkpointing:
                enable_gradient_checkpointing(model.get_base_model())
            try:
                size = largest_fitting(
                    lambda s: try_micro_batch(trainer, micro(s), loss_fn), batch, 1,
                    f"one sequence ({tokens} tokens)", device,
                )  # fmt: skip
                break
            except TrainingError:
                size = 0
        if not size:
            return BudgetFit(budget_gb, True, 0, batch, tokens, None, None)
        size = largest_divisor(batch, size)
        parts = [micro(batch)] if size == batch else None
        if parts is None:
            parts = [{k: v[i : i + size] for k, v in micro(batch).items()}
                     for i in range(0, batch, size)]  # fmt: skip
        step = [
            lambda: trainer.step(
                parts, loss_fn, lambda b: b["input_ids"].numel() - b["input_ids"].shape[0]
            )
        ]
        timing = timed_steps(device, step * (steps + 1))
    disable_gradient_checkpointing(model.get_base_model())
    return BudgetFit(budget_gb, checkpointing, size, batch, tokens, timing.peak_mb,
                     batch * tokens / timing.median)  # fmt: skip
