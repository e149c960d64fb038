"""The Kosmos-2 backbone: loading it (tiny or pretrained), where LoRA goes, and casting.

Everything here is about the frozen part every trial shares; what sits on top of it
(action token, head, loss) is in modeling_mobile_vla.py.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from peft import LoraConfig
from torch import nn
from transformers import AutoTokenizer, Kosmos2Config, Kosmos2Model, PreTrainedTokenizerBase

from trainables.mobile_vla.configuration_mobile_vla import ModelConfig
from trainables.mobile_vla.tokenizer import train_instruction_tokenizer

# CLIP's statistics, which Kosmos-2's vision tower was trained with.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

PREPROCESSOR_FILE = "preprocessor_config.json"
# Attention through torch's scaled_dot_product_attention (fused kernels on CUDA), named
# rather than left to the transformers version's default; it equals "eager" (tested).
ATTENTION = "sdpa"
TINY_BACKBONE_SEED = 1234

# LoRA targets as regexes over Kosmos2Model module names (peft full-matches a string
# target). Bare names like "q_proj" would also hit the vision tower and the connector's
# x_attn, so every pattern is anchored at its tower.
_TEXT_LINEAR = r"text_model\.model\.layers\.\d+\.(self_attn\.(q|k|v|out)_proj|ffn\.fc[12])"
_VISION_LINEAR = (
    r"vision_model\.model\.encoder\.layers\.\d+\.(self_attn\.(q|k|v|out)_proj|mlp\.fc[12])"
)
_CONNECTOR_LINEAR = r"image_to_text_projection\.(dense|x_attn\.(q|k|v|out)_proj)"
LORA_TARGET_PATTERNS = {
    "text": _TEXT_LINEAR,
    "text+vision": f"({_TEXT_LINEAR})|({_VISION_LINEAR})",
    "all_linear": f"({_TEXT_LINEAR})|({_VISION_LINEAR})|({_CONNECTOR_LINEAR})",
}


def tiny_kosmos2_config(cfg: ModelConfig, vocab_size: int) -> Kosmos2Config:
    """A Kosmos-2 small enough to train dozens of trials on a laptop CPU.

    Dropout is off so results do not depend on how a batch is split into micro-batches.
    The text tower (which also initializes the image-to-text connector) is initialized
    with std 1/sqrt(width) instead of Kosmos-2's 0.02: at width 64, 0.02 shrinks the
    image tokens ~100x, the connector's latent queries drown them out, and every frame
    gives the same feature (measured: feature spread across frames 0.0002 vs 0.057).
    """
    text = dict(
        vocab_size=vocab_size,
        embed_dim=cfg.tiny_hidden,
        layers=cfg.tiny_layers,
        ffn_dim=4 * cfg.tiny_hidden,
        attention_heads=cfg.tiny_heads,
        max_position_embeddings=cfg.tiny_max_positions,
        dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
        use_cache=False,
        init_std=cfg.tiny_hidden**-0.5,
    )
    vision = dict(
        hidden_size=cfg.tiny_hidden,
        intermediate_size=4 * cfg.tiny_hidden,
        num_hidden_layers=cfg.tiny_layers,
        num_attention_heads=cfg.tiny_heads,
        image_size=cfg.tiny_image_size,
        patch_size=cfg.tiny_patch_size,
    )
    return Kosmos2Config(
        text_config=text,
        vision_config=vision,
        latent_query_num=cfg.tiny_latent_query_num,
        attn_implementation=ATTENTION,
    )


def load_backbone(
    cfg: ModelConfig, instructions: list[str] | None = None
) -> tuple[Kosmos2Model, PreTrainedTokenizerBase]:
    """(Kosmos2Model in fp32, tokenizer).

    "tiny": random weights from a fixed seed and a tokenizer trained on `instructions`.
    Anything else: `from_pretrained`, offline when it is a directory.
    """
    if cfg.is_tiny:
        if not instructions:
            raise ValueError("instructions: the tiny model trains its tokenizer on them")
        tokenizer = train_instruction_tokenizer(instructions)
        # Its own fixed seed, as if it were pretrained weights: every trial (whatever its
        # `seed`) gets the same backbone, so frozen image features stay valid across trials.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(TINY_BACKBONE_SEED)
            backbone = Kosmos2Model(tiny_kosmos2_config(cfg, len(tokenizer)))
        return backbone, tokenizer
    cfg.check_found()
    local = cfg.is_local
    try:
        tokenizer = AutoTokenizer.from_pretrained(cfg.source, local_files_only=local)
        backbone = Kosmos2Model.from_pretrained(
            cfg.source, local_files_only=local, dtype=torch.float32, attn_implementation=ATTENTION
        )
    except OSError as exc:
        raise ValueError(f"model: cannot load {cfg.model!r}: {exc}") from exc
    return backbone, tokenizer


def read_image_stats(cfg: ModelConfig) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) of the vision tower's preprocessor; CLIP's when it names none."""
    if cfg.is_tiny:
        return CLIP_MEAN, CLIP_STD
    from transformers.utils import cached_file

    path = cached_file(
        cfg.source,
        PREPROCESSOR_FILE,
        local_files_only=cfg.is_local,
        _raise_exceptions_for_missing_entries=False,
        _raise_exceptions_for_connection_errors=False,
    )
    if path is None:
        return CLIP_MEAN, CLIP_STD
    stats = json.loads(Path(path).read_text())
    return tuple(stats.get("image_mean", CLIP_MEAN)), tuple(stats.get("image_std", CLIP_STD))


def lora_config(cfg: ModelConfig) -> LoraConfig:
    return LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=LORA_TARGET_PATTERNS[cfg.lora_target],
        bias="none",
    )


def is_lora_parameter(name: str) -> bool:
    return "lora_" in name


def lora_module_names(policy: nn.Module) -> list[str]:
    """Names (in Kosmos2Model) of the modules that carry a LoRA adapter."""
    from peft.tuners.lora import LoraLayer

    return [name for name, module in policy.kosmos.named_modules() if isinstance(module, LoraLayer)]


def cast_frozen(policy: nn.Module, dtype: torch.dtype) -> None:
    """Cast the frozen matrices of the backbone (linear, conv, embedding) to `dtype`.

    Halves backbone memory under bf16/fp16 autocast. Trainable weights stay fp32 for the
    optimizer, and norms stay fp32 (CPU layer_norm refuses low-precision weights with a
    fp32 input). The forward then needs autocast.
    """
    for module in policy.backbone.modules():
        if not isinstance(module, (nn.Linear, nn.Conv2d, nn.Embedding)):
            continue
        for param in module.parameters(recurse=False):
            if not param.requires_grad and param.is_floating_point():
                param.data = param.data.to(dtype)


def save_backbone(
    policy: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    directory: str | os.PathLike,
) -> None:
    """Write the base backbone of a policy or a bare Kosmos2Model (without LoRA), its
    tokenizer and preprocessor config so that `ModelConfig(model=directory)` loads it
    through `from_pretrained`, like a real Kosmos-2 checkout. Needed to ship a tiny
    model: its weights are random."""
    directory = Path(directory)
    kosmos = policy if isinstance(policy, Kosmos2Model) else policy.kosmos
    state = {}
    for name, tensor in kosmos.state_dict().items():
        if is_lora_parameter(name):
            continue
        state[name.replace(".base_layer.", ".")] = tensor
    kosmos.save_pretrained(directory, state_dict=state)
    tokenizer.save_pretrained(directory)
    size = kosmos.config.vision_config.image_size
    mean, std = (
        (policy.pixel_mean.flatten().tolist(), policy.pixel_std.flatten().tolist())
        if kosmos is not policy
        else (list(CLIP_MEAN), list(CLIP_STD))
    )
    preprocessor = {
        "image_processor_type": "CLIPImageProcessor",
        "do_normalize": True,
        "image_mean": mean,
        "image_std": std,
        "size": {"height": size, "width": size},
    }
    (directory / PREPROCESSOR_FILE).write_text(json.dumps(preprocessor, indent=2) + "\n")
