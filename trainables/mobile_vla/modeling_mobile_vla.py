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

import warnings

import torch
from peft import PeftModel, get_peft_model
from torch import nn
from transformers import Kosmos2Model, PreTrainedTokenizerBase

from trainables.gradient_checkpointing import enable_gradient_checkpointing
from trainables.mobile_vla.action_loss import action_loss
from trainables.mobile_vla.backbone import (
    is_lora_parameter,
    load_backbone,
    lora_config,
    read_image_stats,
)
from trainables.mobile_vla.configuration_mobile_vla import ModelConfig


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
        self.head = ActionHead(
            self.hidden_size,
            cfg.head_width(self.hidden_size),
            cfg.lstm_layers(self.hidden_size),
            cfg.fwd_pred_next_n,
            cfg.action_dim,
        )
        mean, std = read_image_stats(cfg)
        self.register_buffer("pixel_mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        configure_trainable(self)
        if cfg.gradient_checkpointing:
            checkpoint_towers(self)

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
        hidden = text_hidden(self.kosmos.text_model, embeds, mask, image_embeds, image_positions)
        return action_features(hidden, action_positions)

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
        `forward_frames` with shared rows must equal in tests and benchmarks. Inference
        calls `encode_images`, `text_features` and `head` itself.
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


def text_hidden(
    text_model: nn.Module,
    embeds: torch.Tensor,
    mask: torch.Tensor,
    image_embeds: torch.Tensor,
    image_positions: torch.Tensor,
) -> torch.Tensor:
    """The text model's last hidden states (F, S, hidden) for sequences `build_sequences`
    made; rows are independent (a pack of trials runs several policies' rows at once)."""
    return text_model(
        inputs_embeds=embeds,
        attention_mask=mask,
        image_embeds=image_embeds,
        image_embeds_position_mask=image_positions,
        use_cache=False,
        return_dict=True,
    ).last_hidden_state


def action_features(hidden: torch.Tensor, action_positions: torch.Tensor) -> torch.Tensor:
    """Each row's hidden state at its action token: (F, S, hidden) -> (F, hidden)."""
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    return hidden[rows, action_positions]


def build_policy(
    cfg: ModelConfig, instructions: list[str] | None = None
) -> tuple[MobileVLAPolicy, PreTrainedTokenizerBase]:
    """The entry point: backbone (tiny or pretrained) + LoRA + action token + head."""
    backbone, tokenizer = load_backbone(cfg, instructions)
    return MobileVLAPolicy(cfg, backbone), tokenizer


# ---------------------------------------------------------------------------------------
# what trains


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


def checkpoint_towers(policy: MobileVLAPolicy) -> None:
    """Recompute activations in backward in the towers that keep them: the text model
    always (the action token's gradient runs through it), the vision tower only when
    something in it trains. A frozen vision tower fed pixels keeps nothing for backward,
    and with its features cached it does not run at all."""
    kosmos = policy.kosmos
    enable_gradient_checkpointing(kosmos.text_model)
    if any(param.requires_grad for param in kosmos.vision_model.parameters()):
        enable_gradient_checkpointing(kosmos.vision_model)


IMAGE_SIDE = ("vision_model.", "image_to_text_projection.")


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
