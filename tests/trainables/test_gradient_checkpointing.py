"""gradient_checkpointing on the tiny models of both tasks: the layers really recompute in
backward, and the loss and every trainable gradient equal the run without it.

Tolerance: none. On the CPU the recomputed forward runs the same kernels on the same
shapes as the first one, so the gradients are bitwise equal (measured: max difference 0.0
in every case here); anything else is a bug, not float noise. Both ways of taking
gradients are checked: `loss.backward()` and `torch.autograd.grad(loss, params,
allow_unused=True)` (which reentrant checkpointing would not support).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from trainables.config import ConfigError
from trainables.gradient_checkpointing import checkpointed_layers
from trainables.mobile_vla.configuration_mobile_vla import ModelConfig
from trainables.mobile_vla.modeling_mobile_vla import MobileVLAPolicy, action_loss, build_policy
from trainables.mobile_vla.tokenizer import encode_instructions
from trainables.robot_code.configuration_robot_code import ModelConfig as CodeModelConfig
from trainables.robot_code.dataset import Records, RobotCodeData
from trainables.robot_code.demo_data import generate_records
from trainables.robot_code.trainable import RobotCodeTrial, parse_config

pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing")  # peft 0.21

GRADIENT_WAYS = ("backward", "autograd.grad")
INSTRUCTIONS = ["go forward", "turn left at the chair", "go to the red box and stop on its left"]


def gradients(loss: torch.Tensor, named: list[tuple[str, nn.Parameter]], way: str) -> dict:
    params = [param for _, param in named]
    if way == "backward":
        loss.backward()
        grads = [param.grad for param in params]
    else:
        grads = torch.autograd.grad(loss, params, allow_unused=True)
    return {name: grad for (name, _), grad in zip(named, grads, strict=True)}


def count_calls(module: nn.Module) -> list[int]:
    """A counter of `module`'s forward calls: inside a checkpointed layer it runs twice."""
    calls = [0]

    def hook(*_):
        calls[0] += 1

    module.register_forward_hook(hook)
    return calls


def assert_same(run: dict, reference: dict) -> None:
    """Same loss and gradients, exactly (see the module docstring), and some to compare."""
    assert torch.equal(run["loss"], reference["loss"])
    assert run["grads"].keys() == reference["grads"].keys()
    for name, grad in reference["grads"].items():
        if grad is None:
            assert run["grads"][name] is None, name
        else:
            torch.testing.assert_close(run["grads"][name], grad, rtol=0, atol=0, msg=name)
    assert sum(g is not None and bool(g.abs().sum() > 0) for g in run["grads"].values()) > 0


# ---------------------------------------------------------------------------------------
# mobile_vla: the Kosmos-2 towers


def vla_step(checkpointing: bool, way: str, **overrides) -> dict:
    """Loss and gradients of one training step of a perturbed tiny policy."""
    torch.manual_seed(0)
    cfg = ModelConfig(gradient_checkpointing=checkpointing, **overrides)
    policy, tokenizer = build_policy(cfg, INSTRUCTIONS)
    perturb(policy)
    policy.train()
    calls = count_calls(policy.kosmos.text_model.model.layers[0].self_attn)
    vision_calls = count_calls(policy.kosmos.vision_model.model.encoder.layers[0].self_attn)
    gen = torch.Generator().manual_seed(1)
    pixels = torch.randint(0, 256, (3, 4, 56, 56, 3), dtype=torch.uint8, generator=gen)
    pred = policy(pixels, *encode_instructions(tokenizer, INSTRUCTIONS))
    target = torch.rand(pred.shape, generator=gen) * 2 - 1
    total, count = action_loss(pred, target, torch.ones(pred.shape[:-1]))
    loss = total / count
    named = [(n, p) for n, p in policy.named_parameters() if p.requires_grad]
    return {
        "loss": loss.detach(),
        "grads": gradients(loss, named, way),
        "layers": checkpointed_layers(policy),
        "text_calls": calls[0],
        "vision_calls": vision_calls[0],
    }


def perturb(policy: MobileVLAPolicy) -> None:
    """LoRA B starts at zero: move every trainable weight so every gradient is non-trivial."""
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for param in policy.parameters():
            if param.requires_grad:
                param.add_(0.1 * torch.randn(param.shape, generator=gen))


@pytest.mark.parametrize("way", GRADIENT_WAYS)
@pytest.mark.parametrize(
    "overrides, vision_trains",
    [
        ({}, False),  # the default: LoRA on the text model
        ({"lora_target": "text+vision"}, True),
        ({"train_vision": True, "lora_enable": False}, True),
        ({"freeze_backbone": False}, False),  # the connector trains, the vision tower not
    ],
)
def test_mobile_vla_gradients_equal_with_checkpointing(way, overrides, vision_trains):
    plain = vla_step(False, way, **overrides)
    checkpointed = vla_step(True, way, **overrides)
    assert_same(checkpointed, plain)
    layers = ModelConfig().tiny_layers
    assert plain["layers"] == 0 and checkpointed["layers"] == layers * (1 + vision_trains)
    # The text tower reruns in backward; the vision tower only when something in it trains.
    assert (plain["text_calls"], checkpointed["text_calls"]) == (1, 2)
    assert (plain["vision_calls"], checkpointed["vision_calls"]) == (1, 1 + vision_trains)


# ---------------------------------------------------------------------------------------
# robot_code: the causal LM

SMALL = {"torch_threads": 1, "tiny_hidden": 32, "tiny_intermediate": 64, "tiny_vocab_size": 320}


def code_step(checkpointing: bool, way: str) -> dict:
    """Loss and gradients of a robot-code trial's first optimizer step (two micro-batches),
    built the way a trial builds it."""
    rows = generate_records(18, seed=5)
    every = Records([r["input"] for r in rows], [r["output"] for r in rows], ["x"] * 18)
    data = RobotCodeData(every.take(range(16)), every.take(range(16, 18)), source="test")
    config = {**SMALL, "batch_size": 8, "micro_batch_size": 4}
    trial = RobotCodeTrial(parse_config({**config, "gradient_checkpointing": checkpointing}), data)
    trial.model.train()
    calls = count_calls(trial.model.get_base_model().model.layers[0].self_attn)
    micro_batches, _ = next(trial.steps(epoch=0))
    assert len(micro_batches) == 2
    sums, counts = zip(*(trial.loss(batch) for batch in micro_batches), strict=True)
    loss = sum(sums) / sum(counts)
    named = [(n, p) for n, p in trial.model.named_parameters() if p.requires_grad]
    return {
        "loss": loss.detach(),
        "grads": gradients(loss, named, way),
        "layers": trial.derived["checkpointed_layers"],
        "calls": calls[0],
    }


@pytest.mark.parametrize("way", GRADIENT_WAYS)
def test_robot_code_gradients_equal_with_checkpointing(way):
    plain, checkpointed = code_step(False, way), code_step(True, way)
    assert_same(checkpointed, plain)
    assert (plain["layers"], checkpointed["layers"]) == (0, 2)  # the tiny LM's 2 layers
    assert (plain["calls"], checkpointed["calls"]) == (2, 4)  # 2 micro-batches, + recompute


def test_both_tasks_default_to_off_and_refuse_a_non_bool_naming_the_key():
    from trainables.mobile_vla.trial_config import parse_config as parse_vla_config
    from trainables.task import get_task

    for name in ("mobile_vla", "robot_code"):
        assert get_task(name).defaults["gradient_checkpointing"] is False
    for parse in (parse_config, parse_vla_config):
        with pytest.raises(ConfigError, match="gradient_checkpointing: expected bool, got 1"):
            parse({"data_dir": "/data", "gradient_checkpointing": 1})
    for model_config in (ModelConfig, CodeModelConfig):
        with pytest.raises(ValueError, match="gradient_checkpointing: expected true or false"):
            model_config(gradient_checkpointing="yes")
