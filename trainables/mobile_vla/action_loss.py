"""The policy's training loss over action chunks, apart from the model: it needs plain
tensors only (the policy's `compute_loss` calls it with its configured kind and delta)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


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
