"""The Mobile VLA policy: RoboVLMs' "Kosmos-2 + policy head".

For every frame of a window the Kosmos-2 text model reads
    [BOS] + latent image tokens + instruction tokens + a learned action token
and the last hidden state at the action token is that frame's feature. An LSTM runs over
the window's features and an MLP + tanh turns each step into a chunk of
`fwd_pred_next_n` normalized actions.

The backbone is a plain `transformers.Kosmos2Model` (the real checkpoint loads into it;
only the tied LM head is dropped), LoRA comes from peft, and the text model is called
with `inputs_embeds` + `image_embeds` as its own API allows: nothing is patched.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from peft import LoraConfig, PeftModel, get_peft_model, set_peft_model_state_dict
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoTokenizer, Kosmos2Config, Kosmos2Model, PreTrainedTokenizerBase

from trainables.mobile_vla.configuration_mobile_vla import ModelConfig
from trainables.mobile_vla.tokenizer import train_instruction_tokenizer

# CLIP's statistics, which Kosmos-2's vision tower was trained with.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

ADAPTER_DIR = "adapter"  # PEFT's own format, loadable with PeftModel.from_pretrained
HEAD_FILE = "policy_head.safetensors"  # action token, head, trainable non-LoRA backbone
CONFIG_FILE = "model_config.json"
PREPROCESSOR_FILE = "preprocessor_config.json"
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


# ---------------------------------------------------------------------------------------
# backbone


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
        text_config=text, vision_config=vision, latent_query_num=cfg.tiny_latent_query_num
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
    local = cfg.is_local
    if not local and (cfg.model.startswith((".", "/", "~")) or cfg.model.count("/") > 1):
        raise ValueError(f"model: {cfg.model!r} is not a directory (nor a hub id)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(cfg.model, local_files_only=local)
        backbone = Kosmos2Model.from_pretrained(
            cfg.model, local_files_only=local, dtype=torch.float32
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
        cfg.model,
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


# ---------------------------------------------------------------------------------------
# policy


class ActionHead(nn.Module):
    """RoboVLMs' LSTM decoder: LSTM over the window, MLP + tanh to an action chunk."""

    def __init__(self, in_dim: int, hidden: int, layers: int, fwd: int, action_dim: int):
        super().__init__()
        self.fwd, self.action_dim = fwd, action_dim
        self.lstm = nn.LSTM(in_dim, hidden, num_layers=layers, batch_first=True)
        self.mlp = nn.Sequential(
            nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, fwd * action_dim)
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(B, window, in_dim) -> (B, window, fwd, action_dim) in [-1, 1], in fp32.

        Autocast is off here: the head is small next to the backbone, and oneDNN's bf16
        LSTM fails on CPUs without native bf16 ("could not create a primitive descriptor").
        """
        batch, window, _ = features.shape
        with torch.autocast(device_type=features.device.type, enabled=False):
            steps, _ = self.lstm(features.float())
            actions = torch.tanh(self.mlp(steps))
        return actions.view(batch, window, self.fwd, self.action_dim)


class MobileVLAPolicy(nn.Module):
    """Kosmos-2 backbone (+ LoRA) -> per-frame action-token features -> action chunks.

    `backbone` is a Kosmos2Model (LoRA is added here when cfg.lora_enable) or a PeftModel
    around one (e.g. from `PeftModel.from_pretrained`), used as is.
    """

    def __init__(self, cfg: ModelConfig, backbone: Kosmos2Model | PeftModel):
        super().__init__()
        self.cfg = cfg
        if isinstance(backbone, PeftModel):
            if not cfg.lora_enable:
                raise ValueError("lora_enable: false, but the backbone carries a LoRA adapter")
        elif cfg.lora_enable:
            with warnings.catch_warnings():
                # peft 0.21 reads transformers' deprecated `is_gradient_checkpointing`.
                warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
                backbone = get_peft_model(backbone, lora_config(cfg))
        self.backbone = backbone
        text_config = self.kosmos.config.text_config
        self.hidden_size = text_config.embed_dim
        self.num_image_tokens = self.kosmos.config.latent_query_num
        self.bos_token_id = text_config.bos_token_id
        self.pad_token_id = text_config.pad_token_id
        # RoboVLMs starts the action token at zero; it learns its own embedding.
        self.action_token = nn.Parameter(torch.zeros(self.hidden_size))
        head_hidden = cfg.head_hidden or min(self.hidden_size, 1024)
        self.head = ActionHead(
            self.hidden_size,
            head_hidden,
            cfg.lstm_layers(self.hidden_size),
            cfg.fwd_pred_next_n,
            cfg.action_dim,
        )
        mean, std = read_image_stats(cfg)
        self.register_buffer("pixel_mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        configure_trainable(self)

    @property
    def kosmos(self) -> Kosmos2Model:
        """The Kosmos2Model itself (with LoRA layers injected when there are any)."""
        if isinstance(self.backbone, PeftModel):
            return self.backbone.get_base_model()
        return self.backbone

    def image_size(self) -> tuple[int, int]:
        size = self.kosmos.config.vision_config.image_size
        return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 RGB (N, H, W, 3) -> latent image tokens (N, num_image_tokens, hidden).

        Normalizes here so the data can stay uint8 (4x less memory and transfer).
        """
        if pixels.dtype != torch.uint8:
            raise ValueError(f"pixels: expected uint8 RGB, got {pixels.dtype}")
        if tuple(pixels.shape[1:3]) != self.image_size() or pixels.shape[-1] != 3:
            raise ValueError(
                f"pixels: frames are {tuple(pixels.shape[1:])}, the vision tower takes "
                f"{(*self.image_size(), 3)}"
            )
        images = pixels.permute(0, 3, 1, 2).float().div_(255.0)
        images = (images - self.pixel_mean) / self.pixel_std
        return self.kosmos.get_image_features(pixel_values=images, return_dict=True).pooler_output

    def build_sequences(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-row text inputs around the image tokens and the action token.

        input_ids/attention_mask (B, L) hold [BOS] + instruction, padded on either side.
        Returns (inputs_embeds (B, S, H) unscaled, attention_mask (B, S),
        image_position_mask (B, S) bool, action_positions (B,)), S = L + image tokens + 1.
        The action token sits right after each row's last real token, so with the text
        model's causal attention a row's feature does not depend on the batch's padding.
        """
        batch = input_ids.shape[0]
        real = attention_mask.bool()
        # Stable sort moves real tokens to the front in order: right padding, whatever came.
        order = torch.argsort((~real).to(torch.int8), dim=1, stable=True)
        real = real.gather(1, order)
        ids = input_ids.gather(1, order).masked_fill(~real, self.pad_token_id)
        lengths = real.sum(dim=1)  # BOS + instruction tokens

        device, n_img = input_ids.device, self.num_image_tokens
        pad = torch.full((batch, 1), self.pad_token_id, dtype=ids.dtype, device=device)
        ids = torch.cat([ids[:, :1], pad.expand(batch, n_img), ids[:, 1:], pad], dim=1)
        ones = torch.ones((batch, 1 + n_img), dtype=torch.bool, device=device)
        zero = torch.zeros((batch, 1), dtype=torch.bool, device=device)
        mask = torch.cat([ones, real[:, 1:], zero], dim=1)

        seq_len = ids.shape[1]
        positions = torch.arange(seq_len, device=device)
        action_positions = n_img + lengths
        is_action = positions[None, :] == action_positions[:, None]
        image_positions = ((positions >= 1) & (positions <= n_img))[None, :].expand(batch, -1)

        embeds = self.kosmos.get_input_embeddings()(ids)
        action = self.action_token.to(embeds.dtype)
        embeds = torch.where(is_action[..., None], action, embeds)
        return embeds, (mask | is_action).long(), image_positions, action_positions

    def text_features(
        self, image_embeds: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        """One row per frame: (F, image tokens, hidden) + its instruction (F, L) -> (F, hidden).

        A frame's feature depends only on (frame, instruction), not on the window around
        it: that is what lets a batch run each distinct frame once.
        """
        if image_embeds.shape[0] != input_ids.shape[0] or attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"image_embeds {tuple(image_embeds.shape)}, input_ids {tuple(input_ids.shape)} "
                f"and attention_mask {tuple(attention_mask.shape)} need one row per frame"
            )
        embeds, mask, image_positions, action_positions = self.build_sequences(
            input_ids, attention_mask
        )
        hidden = self.kosmos.text_model(
            inputs_embeds=embeds,
            attention_mask=mask,
            image_embeds=image_embeds,
            image_embeds_position_mask=image_positions,
            use_cache=False,
            return_dict=True,
        ).last_hidden_state
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        return hidden[rows, action_positions]

    def forward_frames(
        self,
        windows: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        pixels: torch.Tensor | None = None,
        image_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Run the backbone once per frame row, then gather each window's sequence.

        Rows are frames: `pixels` (F, H, W, 3) uint8, or their precomputed latent image
        tokens `image_embeds` (F, image tokens, hidden) when the vision side is frozen;
        input_ids/attention_mask (F, L) are each frame's instruction. `windows` (B, window)
        indexes rows. A row used by several windows gets the sum of their gradients, so
        this equals running every window's frames separately.
        """
        if (pixels is None) == (image_embeds is None):
            raise ValueError("forward_frames: pass exactly one of pixels and image_embeds")
        if image_embeds is None:
            image_embeds = self.encode_images(pixels)
        features = self.text_features(image_embeds, input_ids, attention_mask)
        return self.head(features[windows])

    def forward(
        self, pixels: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        """(B, window, H, W, 3) uint8 RGB, (B, L) ids and mask -> (B, window, fwd, A) fp32.

        Every frame of every window runs (the per-window path): the reference that
        `forward_frames` with shared rows must equal, and what inference uses.
        """
        if pixels.dim() != 5:
            raise ValueError(f"pixels: expected (B, window, H, W, 3), got {tuple(pixels.shape)}")
        batch, window = pixels.shape[:2]
        if input_ids.shape[0] != batch or attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"input_ids {tuple(input_ids.shape)} / attention_mask "
                f"{tuple(attention_mask.shape)} do not match {batch} windows"
            )
        windows = torch.arange(batch * window, device=pixels.device).view(batch, window)
        return self.forward_frames(
            windows,
            input_ids.repeat_interleave(window, dim=0),
            attention_mask.repeat_interleave(window, dim=0),
            pixels=pixels.flatten(0, 1),
        )

    def compute_loss(
        self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`action_loss` with this policy's configured kind and delta."""
        return action_loss(pred, target, mask, self.cfg.loss, self.cfg.huber_delta)


def build_policy(
    cfg: ModelConfig, instructions: list[str] | None = None
) -> tuple[MobileVLAPolicy, PreTrainedTokenizerBase]:
    """The entry point: backbone (tiny or pretrained) + LoRA + action token + head."""
    backbone, tokenizer = load_backbone(cfg, instructions)
    return MobileVLAPolicy(cfg, backbone), tokenizer


# ---------------------------------------------------------------------------------------
# loss


def action_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    kind: str = "huber",
    delta: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of the elementwise loss over real targets, number of real elements).

    pred/target (B, window, fwd, A); mask (B, window, fwd), True where the chunk entry is
    real. Returning a sum and a count lets the training loop average over the real
    targets of the whole effective batch across micro-batches. Computed in fp32.
    """
    if pred.shape != target.shape or pred.shape[:-1] != mask.shape:
        raise ValueError(
            f"action_loss: pred {tuple(pred.shape)}, target {tuple(target.shape)} and "
            f"mask {tuple(mask.shape)} do not line up"
        )
    pred, target = pred.float(), target.float()
    if kind == "huber":
        elementwise = F.huber_loss(pred, target, reduction="none", delta=delta)
    elif kind == "mse":
        elementwise = F.mse_loss(pred, target, reduction="none")
    else:
        raise ValueError(f"loss: {kind!r} not one of ['huber', 'mse']")
    real = mask.bool().unsqueeze(-1).expand_as(elementwise)
    total = torch.where(real, elementwise, torch.zeros_like(elementwise)).sum()
    return total, real.sum()


# ---------------------------------------------------------------------------------------
# what trains


def is_lora_parameter(name: str) -> bool:
    return "lora_" in name


def configure_trainable(policy: MobileVLAPolicy) -> None:
    """Set requires_grad per RoboVLMs' train_setup.

    The backbone trains unless freeze_backbone; then train_vision and
    train_text_embedding decide the vision tower and the word embeddings either way (as
    RoboVLMs does). LoRA weights, the action token and the head always train.
    """
    cfg, kosmos = policy.cfg, policy.kosmos
    kosmos.requires_grad_(not cfg.freeze_backbone)
    kosmos.vision_model.requires_grad_(cfg.train_vision)
    kosmos.get_input_embeddings().requires_grad_(cfg.train_text_embedding)
    for name, param in kosmos.named_parameters():
        if is_lora_parameter(name):
            param.requires_grad_(True)
    policy.action_token.requires_grad_(True)
    policy.head.requires_grad_(True)
    if not any(p.requires_grad for p in policy.parameters()):
        raise ValueError("nothing to train: every parameter is frozen")


IMAGE_SIDE = ("vision_model.", "image_to_text_projection.")


def trainable_image_side(policy: MobileVLAPolicy) -> list[str]:
    """Trainable parameters that change a frame's image tokens (vision tower, connector).

    Empty means the image tokens are a fixed function of the frame for the whole run."""
    return [
        name
        for name, param in policy.kosmos.named_parameters()
        if param.requires_grad and name.startswith(IMAGE_SIDE)
    ]


def parameter_counts(policy: MobileVLAPolicy) -> dict[str, int]:
    """Trainable and total parameter counts, with the trainable ones broken down."""
    counts = {"total": 0, "trainable": 0, "lora": 0, "backbone": 0, "head": 0}
    for name, param in policy.named_parameters():
        counts["total"] += param.numel()
        if not param.requires_grad:
            continue
        counts["trainable"] += param.numel()
        if is_lora_parameter(name):
            counts["lora"] += param.numel()
        elif name.startswith("backbone."):
            counts["backbone"] += param.numel()
        else:
            counts["head"] += param.numel()  # the head and the action token
    return counts


def lora_module_names(policy: MobileVLAPolicy) -> list[str]:
    """Names (in Kosmos2Model) of the modules that carry a LoRA adapter."""
    from peft.tuners.lora import LoraLayer

    return [name for name, module in policy.kosmos.named_modules() if isinstance(module, LoraLayer)]


def cast_frozen(policy: MobileVLAPolicy, dtype: torch.dtype) -> None:
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


# ---------------------------------------------------------------------------------------
# saving


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
        _load_adapter(policy.backbone, directory / ADAPTER_DIR)
    head = load_file(directory / HEAD_FILE, device=str(policy.action_token.device))
    expected = set(trainable_state_dict(policy))
    if set(head) != expected:
        raise ValueError(
            f"{directory / HEAD_FILE}: holds {sorted(set(head) - expected)} extra and misses "
            f"{sorted(expected - set(head))}; was it saved with another train setup?"
        )
    policy.load_state_dict(head, strict=False)


def _load_adapter(model: PeftModel, adapter_dir: Path) -> None:
    saved = json.loads((adapter_dir / "adapter_config.json").read_text())
    current = model.peft_config["default"]
    for key in ("r", "lora_alpha", "target_modules"):
        theirs, mine = _comparable(saved.get(key)), _comparable(getattr(current, key))
        if theirs != mine:
            raise ValueError(f"{adapter_dir}: adapter {key}={theirs!r}, policy has {mine!r}")
    weights = load_file(adapter_dir / "adapter_model.safetensors")
    result = set_peft_model_state_dict(model, weights)
    if result.unexpected_keys:
        raise ValueError(f"{adapter_dir}: unexpected adapter weights {result.unexpected_keys[:5]}")


def _comparable(value):
    """peft keeps list targets as a set and writes them as a list: compare sorted."""
    return sorted(value) if isinstance(value, (set, list, tuple)) else value


def save_backbone(
    policy: MobileVLAPolicy | Kosmos2Model,
    tokenizer: PreTrainedTokenizerBase,
    directory: str | os.PathLike,
) -> None:
    """Write the base backbone (without LoRA), its tokenizer and preprocessor config so
    that `ModelConfig(model=directory)` loads it through `from_pretrained`, like a real
    Kosmos-2 checkout. Needed to ship a tiny model: its weights are random."""
    directory = Path(directory)
    kosmos = policy.kosmos if isinstance(policy, MobileVLAPolicy) else policy
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
        if isinstance(policy, MobileVLAPolicy)
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
