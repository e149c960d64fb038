"""Gradient (activation) checkpointing of a transformers model, for every task.

A checkpointed layer keeps only its input in the forward pass and runs again in backward
to rebuild what backward needs: less memory for activations, about one more forward of
compute. transformers' own switch is used; nothing is patched.

Always non-reentrant: the reentrant variant breaks `torch.autograd.grad` (the training
loop may compute a micro-batch's gradients with it), and it only passes gradients on when
a layer's input requires grad, which a frozen embedding's output under LoRA does not.
"""

from __future__ import annotations

from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_layers import GradientCheckpointingLayer

NON_REENTRANT = {"use_reentrant": False}


def enable_gradient_checkpointing(model: PreTrainedModel) -> None:
    """Checkpoint every transformer layer of `model` (a PreTrainedModel, or a sub-model
    of one: a tower of Kosmos-2, the base model under a PeftModel)."""
    enable = getattr(model, "activation_checkpointing_enable", None)
    if enable is not None:  # the newer name; the old one is deprecated (transformers 5.25)
        enable(activation_checkpointing_kwargs=NON_REENTRANT)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=NON_REENTRANT)


def disable_gradient_checkpointing(model: PreTrainedModel) -> None:
    """Keep activations again (a benchmark compares both ways on one loaded model)."""
    disable = getattr(model, "activation_checkpointing_disable", None)
    if disable is not None:
        disable()
    else:
        model.gradient_checkpointing_disable()


def checkpointed_layers(model: nn.Module) -> int:
    """How many layers of `model` recompute their activations in backward (0: none)."""
    return sum(
        1
        for module in model.modules()
        if isinstance(module, GradientCheckpointingLayer) and module.gradient_checkpointing
    )
