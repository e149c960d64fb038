"""Helpers the training benchmarks share: model FLOPs per frame, a random Kosmos-2 saved
like a checkout, device timing and memory, and the one-line error they stop with."""

from __future__ import annotations

import gc
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers import Kosmos2Config, Kosmos2Model

from trainables.mobile_vla.backbone import save_backbone
from trainables.mobile_vla.configuration_mobile_vla import ModelConfig
from trainables.mobile_vla.dataset import DataConfig, MobileVLAData, load_dataset
from trainables.mobile_vla.demo_data import write_demo_episodes
from trainables.mobile_vla.modeling_mobile_vla import MobileVLAPolicy
from trainables.mobile_vla.tokenizer import train_instruction_tokenizer
from trainables.mobile_vla.windows import Windows


class BenchError(RuntimeError):
    """A set-up this benchmark cannot run; printed as one line."""


def run_bench(main: Callable[[], None], script: str) -> None:
    """Run a benchmark's `main`; a `BenchError` ends it with one line naming the script
    (its `__file__`) and exit status 1, without a traceback."""
    try:
        main()
    except BenchError as exc:
        sys.exit(f"bench/{Path(script).name}: error: {exc}")


FLOPS_FORMULA = """\
FLOPs/frame = sum over linear/conv weights of 2*P*T*(1 + a + w)
            + sum over attention layers of 4*T^2*d*(1 + 2a)
  P weight size, T tokens per frame in that tower, d its width; a = 1 where the gradient
  flows back through the tower (text: always, the trained action token sits at its
  input; vision / connector: only with trainable weights there or below); w = 1 for
  trainable weights (LoRA A/B). A frozen text tower thus counts (2 fwd + 2 act-grad) x P
  x T, a frozen vision tower under a text-only LoRA 2 x P x T (forward only: autograd
  never goes back into it). Ignored: head (LSTM + MLP), embeddings, norms, softmax,
  LoRA's extra activation-grad matmuls. samples/s x window x FLOPs/frame = FLOP/s."""


@dataclass
class TowerFlops:
    name: str
    tokens: int
    frozen: int  # frozen linear/conv weights
    trainable: int  # trainable linear/conv weights (LoRA A/B, unfrozen bases)
    backward: bool  # does the gradient flow back through it
    flops: float


def tower_flops(
    name: str, module: nn.Module, tokens: int, backward: bool, layers: int, width: int
) -> TowerFlops:
    frozen = trainable = 0
    for sub in module.modules():
        if isinstance(sub, (nn.Linear, nn.Conv2d)):
            if sub.weight.requires_grad:
                trainable += sub.weight.numel()
            else:
                frozen += sub.weight.numel()
    a = int(backward)
    linear = 2 * tokens * (frozen * (1 + a) + trainable * (2 + a))
    attention = 4 * tokens**2 * width * layers * (1 + 2 * a)
    return TowerFlops(name, tokens, frozen, trainable, backward, float(linear + attention))


def model_flops(policy: MobileVLAPolicy, text_tokens: int) -> list[TowerFlops]:
    """Per-frame training FLOPs of the backbone, tower by tower (see FLOPS_FORMULA)."""
    kosmos = policy.kosmos
    vision_cfg, text_cfg = kosmos.config.vision_config, kosmos.config.text_config
    height, width = policy.image_size()
    vision_tokens = (height // vision_cfg.patch_size) * (width // vision_cfg.patch_size) + 1

    def trains(module: nn.Module) -> bool:
        return any(p.requires_grad for p in module.parameters())

    vision_backward = trains(kosmos.vision_model)
    connector_backward = vision_backward or trains(kosmos.image_to_text_projection)
    text = tower_flops(
        "text", kosmos.text_model, text_tokens, True, text_cfg.layers, text_cfg.embed_dim
    )
    vision = tower_flops(
        "vision",
        kosmos.vision_model,
        vision_tokens,
        vision_backward,
        vision_cfg.num_hidden_layers,
        vision_cfg.hidden_size,
    )
    # The connector's dense layer reads every vision token; its cross-attention's q/out
    # see only the latent queries, so this over-counts a little (it is small).
    connector = tower_flops(
        "connector", kosmos.image_to_text_projection, vision_tokens, connector_backward, 0, 0
    )
    return [text, vision, connector]


# ---------------------------------------------------------------------------------------
# device timing and memory


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def release_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


# ---------------------------------------------------------------------------------------
# data and model set-up


def subset_windows(windows: Windows, count: int, seed: int) -> Windows:
    """`count` windows spread over all episodes (a seeded sample, kept in order)."""
    if count > len(windows):
        raise BenchError(
            f"need {count} training windows (steps_per_epoch x batch_size), the data has "
            f"{len(windows)}: raise --episodes"
        )
    keep = np.sort(np.random.default_rng(seed).choice(len(windows), count, replace=False))
    return Windows(
        frames=windows.frames[keep],
        episode=windows.episode[keep],
        chunks=windows.chunks[keep],
        mask=windows.mask[keep],
    )


def write_random_kosmos2(
    directory: Path, instructions: list[str], config: Kosmos2Config, device: torch.device
) -> None:
    """A Kosmos-2 of `config` with random weights, saved so that `ModelConfig(model=dir)`
    loads it like a real checkout (weights, tokenizer, preprocessor config).

    Initialized on `device` (fast on a GPU) and saved in bf16 to halve the file;
    `load_backbone` reads it back as fp32. The tokenizer is the instruction tokenizer the
    tiny model uses; its ids (<s>=0, <pad>=1) are Kosmos-2's and fit its vocabulary.
    """
    tokenizer = train_instruction_tokenizer(instructions)
    if len(tokenizer) > config.text_config.vocab_size:
        raise BenchError("the instruction tokenizer does not fit the model's vocabulary")
    torch.manual_seed(0)
    with torch.device(device):
        kosmos = Kosmos2Model(config)
    kosmos.to(device="cpu", dtype=torch.bfloat16)
    save_backbone(kosmos, tokenizer, directory)
    del kosmos
    release_memory(device)


def demo_data_and_model(
    root: Path, episodes: int, model: str, kosmos: Kosmos2Config | None, device: torch.device
) -> tuple[MobileVLAData, str, Path]:
    """(data, model, data dir): `episodes` demo episodes written under `root` and loaded at
    the model's image size (no validation split, decode cache under `root`), and the model
    to load: `model` itself, or with `kosmos` a random Kosmos-2 of that config written
    under `root` (see write_random_kosmos2)."""
    data_dir = root / "episodes"
    write_demo_episodes(data_dir, episodes)
    if kosmos is not None:
        size = kosmos.vision_config.image_size
        image_size = (size, size)
    else:
        image_size = ModelConfig(model=model).image_size()
    data = load_dataset(
        DataConfig(data_dir=str(data_dir), image_size=image_size, val_ratio=0.0,
                   cache_dir=str(root / "cache")),
        progress=False,
    )  # fmt: skip
    if kosmos is not None:
        started = time.perf_counter()
        model = str(root / "kosmos2-random")
        write_random_kosmos2(Path(model), data.instructions, kosmos, device)
        print(f"wrote a random Kosmos-2 in {time.perf_counter() - started:.0f} s", flush=True)
    return data, model, data_dir
