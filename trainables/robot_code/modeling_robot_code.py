"""The robot-code model: a causal LM (Llama-style) with a PEFT LoRA adapter.

The tiny model is a plain `LlamaForCausalLM` built from a `LlamaConfig` with random
weights, and a pretrained one is whatever `AutoModelForCausalLM` loads from a local
directory, so the same code trains both; `save_base_model` writes a tiny model in the
layout of a real checkout so tests load it through `from_pretrained` too.
Everything that trains lives in the PEFT model (LoRA weights, and with
`train_embeddings` the embeddings and LM head as `modules_to_save`), so the adapter
directory alone, loaded with `PeftModel.from_pretrained`, reproduces the trained model.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from trainables.adapters import load_adapter
from trainables.gradient_checkpointing import enable_gradient_checkpointing
from trainables.robot_code.configuration_robot_code import EMBEDDING_MODULES, ModelConfig
from trainables.robot_code.tokenizer import train_code_tokenizer

ADAPTER_DIR = "adapter"  # PEFT's own format, loadable with PeftModel.from_pretrained
TOKENIZER_DIR = "tokenizer"
CONFIG_FILE = "model_config.json"


class ModelError(ValueError):
    """A model that cannot be loaded or adapted as configured."""


def tiny_llama_config(cfg: ModelConfig, tokenizer: PreTrainedTokenizerBase) -> LlamaConfig:
    """A Llama small enough that a few CPU epochs take seconds.

    Untied embeddings (as in CodeLlama), no dropout (results must not depend on how a
    batch is split into micro-batches), special-token ids from the trained tokenizer.
    """
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.tiny_hidden,
        intermediate_size=cfg.tiny_intermediate,
        num_hidden_layers=cfg.tiny_layers,
        num_attention_heads=cfg.tiny_heads,
        num_key_value_heads=cfg.tiny_heads,
        max_position_embeddings=cfg.tiny_max_positions,
        attention_dropout=0.0,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        use_cache=True,
    )


def load_base(
    cfg: ModelConfig, texts: list[str] | None = None, dtype: torch.dtype = torch.float32
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """(causal LM without LoRA, tokenizer).

    "tiny": random weights (deterministic under torch.manual_seed) and a BPE tokenizer
    trained on `texts`. A directory: `from_pretrained`, offline, frozen weights in `dtype`
    (bf16/fp16 halves a 7B model's memory; what trains is upcast to fp32 later).
    """
    if cfg.is_tiny:
        if not texts:
            raise ModelError("texts: the tiny model trains its tokenizer on them")
        tokenizer = train_code_tokenizer(texts, cfg.tiny_vocab_size)
        return LlamaForCausalLM(tiny_llama_config(cfg, tokenizer)), tokenizer
    path = str(Path(cfg.model).expanduser())
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=dtype)
    except (OSError, ValueError) as exc:
        raise ModelError(f"model: cannot load {cfg.model!r}: {exc}") from exc
    return model, tokenizer


def lora_config(cfg: ModelConfig) -> LoraConfig:
    return LoraConfig(
        task_type="CAUSAL_LM",
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=cfg.target_modules(),
        modules_to_save=list(EMBEDDING_MODULES) if cfg.trains_embeddings else None,
        bias="none",
    )


def check_targets(base: PreTrainedModel, cfg: ModelConfig) -> None:
    """Every LoRA target must name a linear layer of this model. PEFT itself only
    complains when none matches, so a typo in one of several would silently not train."""
    linear = {
        name.rsplit(".", 1)[-1] for name, m in base.named_modules() if isinstance(m, nn.Linear)
    }
    missing = [t for t in cfg.target_modules() if t not in linear]
    if missing:
        raise ModelError(
            f"lora_target: {', '.join(missing)} names no linear layer of this model "
            f"(it has: {', '.join(sorted(linear))})"
        )


def add_lora(base: PreTrainedModel, cfg: ModelConfig) -> PeftModel:
    """Wrap the base model (what trains is made fp32 by the Trainer, whatever the base's
    dtype: modules_to_save copies take the base's)."""
    check_targets(base, cfg)
    with warnings.catch_warnings():
        # peft 0.21 reads transformers' deprecated `is_gradient_checkpointing`.
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
        try:
            model = get_peft_model(base, lora_config(cfg))
        except ValueError as exc:  # e.g. "Target modules {...} not found in the base model"
            raise ModelError(f"lora_target: {exc}") from None
    return model


def cast_matrices(base: PreTrainedModel, dtype: torch.dtype) -> None:
    """A base model's linear and embedding weights to `dtype`, before LoRA wraps it (all
    of them are frozen then; what trains is created, or upcast, by `add_lora`). Halves
    memory under autocast, as loading a pretrained model in that dtype does. Norm
    weights stay fp32: RMSNorm computes in fp32 anyway."""
    for module in base.modules():
        if isinstance(module, (nn.Linear, nn.Embedding)):
            for param in module.parameters(recurse=False):
                if param.is_floating_point():
                    param.data = param.data.to(dtype)


def build_model(
    cfg: ModelConfig, texts: list[str] | None = None, dtype: torch.dtype = torch.float32
) -> tuple[PeftModel, PreTrainedTokenizerBase]:
    """The entry point: base model (tiny or local) + LoRA (+ embeddings) and tokenizer."""
    base, tokenizer = load_base(cfg, texts, dtype)
    if cfg.is_tiny and dtype != torch.float32:
        cast_matrices(base, dtype)
    model = add_lora(base, cfg)
    if cfg.gradient_checkpointing:
        enable_gradient_checkpointing(model.get_base_model())
    return model, tokenizer


def parameter_counts(model: nn.Module) -> dict[str, int]:
    counts = {"total": 0, "trainable": 0, "lora": 0}
    for name, param in model.named_parameters():
        counts["total"] += param.numel()
        if param.requires_grad:
            counts["trainable"] += param.numel()
            counts["lora"] += param.numel() if "lora_" in name else 0
    return counts


def save_trainable(
    model: PeftModel, tokenizer: PreTrainedTokenizerBase, cfg: ModelConfig, directory: Path
) -> None:
    """`adapter/` (PEFT format: LoRA + modules_to_save), `tokenizer/`, `model_config.json`."""
    directory.mkdir(parents=True, exist_ok=True)
    # save_embedding_layers=False: "auto" may ask the hub whether the vocab changed.
    model.save_pretrained(directory / ADAPTER_DIR, save_embedding_layers=False)
    tokenizer.save_pretrained(directory / TOKENIZER_DIR)
    cfg.save(directory / CONFIG_FILE)


def load_trainable(model: PeftModel, directory: Path) -> None:
    """Load `save_trainable`'s adapter into a model built with the same config."""
    keys = ("r", "lora_alpha", "target_modules", "modules_to_save")
    load_adapter(model, directory / ADAPTER_DIR, keys, owner="the model", error=ModelError)


def save_base_model(
    base: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, directory: Path
) -> None:
    """Write a base model (before `add_lora`, which changes it in place) and its tokenizer
    like a real checkout, so that `ModelConfig(model=directory)` loads it with
    `from_pretrained`. A tiny model's weights are random: this is how to reuse one."""
    if isinstance(base, PeftModel):
        raise ModelError("save_base_model: expected the base model, got a PeftModel")
    base.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
