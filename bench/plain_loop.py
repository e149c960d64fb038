"""The baseline of bench/trainable_step.py: the same policy (same seed and build path),
data and steps as train(), in a loop written directly in PyTorch.

Per micro-batch: gather from the numpy arrays and copy, forward under the same autocast,
masked Huber sum / real-target count of the whole step, backward; then clip_grad_norm_,
AdamW.step, zero_grad. No guards, no scheduler, no scaler, no `.item()`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from common import model_flops
from torch import nn

from trainables.mobile_vla.backbone import cast_frozen
from trainables.mobile_vla.dataset import MobileVLAData
from trainables.mobile_vla.modeling_mobile_vla import build_policy
from trainables.mobile_vla.tokenizer import encode_instructions
from trainables.mobile_vla.trainable import parse_config


class PlainLoop:
    """The same policy (same seed and build path), data and steps in bare PyTorch."""

    def __init__(self, config: dict[str, Any], data: MobileVLAData):
        cfg = parse_config(config)
        self.cfg, self.data = cfg, data
        self.device = torch.device(config["device"])
        torch.manual_seed(cfg.train.seed)
        self.policy, tokenizer = build_policy(cfg.model, data.instructions)
        self.policy.to(self.device)
        self.bf16 = cfg.train.precision == "bf16"
        if self.bf16:
            cast_frozen(self.policy, torch.bfloat16)
        self.input_ids, self.attention_mask = encode_instructions(tokenizer, data.instructions)
        self.params = [p for p in self.policy.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            self.params, lr=cfg.train.learning_rate, weight_decay=0.0
        )
        self.step_losses: list[torch.Tensor] = []  # one 0-dim tensor per step, no sync
        # Tokens per frame in the text model, as build_sequences lays them out.
        text_tokens = self.input_ids.shape[1] + self.policy.num_image_tokens + 1
        self.towers = model_flops(self.policy, text_tokens)
        self.trainable = sum(p.numel() for p in self.params)

    def autocast(self) -> AbstractContextManager:
        if not self.bf16:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    def to_device(self, array: np.ndarray | torch.Tensor) -> torch.Tensor:
        tensor = torch.from_numpy(array) if isinstance(array, np.ndarray) else array
        return tensor.to(self.device, non_blocking=True)

    def steps(self) -> Iterator[int]:
        """Runs all epochs; yields the epoch index after every optimizer step."""
        windows, images, policy = self.data.train, self.data.images, self.policy
        batch_size, micro = self.cfg.train.batch_size, self.cfg.train.micro_batch_size
        steps, action_dim = len(windows) // batch_size, windows.chunks.shape[-1]
        delta, max_norm = self.cfg.model.huber_delta, self.cfg.train.grad_clip
        policy.train()
        for epoch in range(self.cfg.train.max_epochs):
            order = np.random.default_rng([self.cfg.train.seed, epoch]).permutation(len(windows))
            for step in range(steps):
                indices = order[step * batch_size : (step + 1) * batch_size]
                count = int(windows.mask[indices].sum()) * action_dim  # numpy: no sync
                step_loss = torch.zeros((), device=self.device)
                for start in range(0, batch_size, micro):
                    idx = indices[start : start + micro]
                    episodes = torch.from_numpy(windows.episode[idx])
                    target = self.to_device(windows.chunks[idx])
                    mask = self.to_device(windows.mask[idx])
                    with self.autocast():
                        pred = policy(
                            self.to_device(images[windows.frames[idx]]),
                            self.to_device(self.input_ids[episodes]),
                            self.to_device(self.attention_mask[episodes]),
                        )
                    error = F.huber_loss(pred.float(), target, reduction="none", delta=delta)
                    loss = (error * mask.unsqueeze(-1)).sum() / count
                    loss.backward()
                    step_loss += loss.detach()
                nn.utils.clip_grad_norm_(self.params, max_norm)
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                self.step_losses.append(step_loss)
                yield epoch

    def mean_loss(self, skip_steps: int) -> float:
        return torch.stack(self.step_losses[skip_steps:]).mean().item()
