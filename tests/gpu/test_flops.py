"""The MFU arithmetic of trainables.flops, on a CPU (the metric itself appears on CUDA)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from trainables.flops import (
    StepFlops,
    card_peak_tflops,
    counted_flops,
    litgpt_flops,
    utilization,
)
from trainables.training import TrainConfig, Trainer, plan_batches

B, IN, OUT = 8, 16, 4


@pytest.mark.parametrize(
    ("name", "tflops"),
    [
        ("NVIDIA H100 80GB HBM3", 989.0),
        ("NVIDIA H200", 989.0),
        ("NVIDIA A100-SXM4-80GB", 312.0),  # not the A10's 125: longer words first
        ("NVIDIA A10", 125.0),
        ("NVIDIA RTX A5000", 111.0),
        ("NVIDIA GeForce RTX 4090", 165.0),
        ("Some Future GPU", None),
    ],
)
def test_the_peak_is_looked_up_by_the_cards_name(name, tflops):
    assert card_peak_tflops(name) == tflops


def test_an_override_wins_over_the_table():
    assert card_peak_tflops("NVIDIA H100", 500.0) == 500.0


def model(trainable_weight: bool) -> nn.Module:
    torch.manual_seed(0)
    layer = nn.Linear(IN, OUT, bias=False)
    layer.weight.requires_grad_(trainable_weight)
    return nn.Sequential(nn.Linear(IN, IN, bias=False), layer)  # the first one trains


@pytest.mark.parametrize("trainable_weight", [False, True])
def test_counted_flops_leave_out_a_frozen_layers_weight_gradient(trainable_weight):
    """Forward 2*B*I*O per layer; backward 2*B*I*O for the input gradient and another
    2*B*I*O for the weight gradient, computed only where the weight trains. The first
    layer trains and its input needs no gradient: forward + weight gradient."""
    net = model(trainable_weight)
    x = torch.randn(B, IN)
    flops = counted_flops(lambda: net(x).sum().backward())
    first = 2 * B * IN * IN * 2
    second = 2 * B * IN * OUT * (3 if trainable_weight else 2)
    assert flops == first + second


def test_the_litgpt_convention_counts_2x_frozen_and_3x_trainable_per_token():
    # 100 frozen + 10 trainable parameters over 7 tokens: 2 x 7 x (200 + 30).
    assert litgpt_flops(100, 10, 7) == 2 * 7 * 230


def test_utilization_is_flops_per_second_over_the_peak():
    # The H200 cached bf16 step of the README: 20.55 TFLOP in 158 ms over 989 TFLOP/s.
    assert utilization(20.55e12, 0.158, 989e12) == pytest.approx(0.1315, abs=1e-4)
    with pytest.raises(ValueError):
        utilization(1.0, 0.0, 989e12)


def trainer_for(net: nn.Module) -> Trainer:
    cfg = TrainConfig(batch_size=B, device="cpu", precision="fp32")
    return Trainer(net, cfg, plan_batches(cfg, B))


def loss_fn(net: nn.Module):
    def loss(batch: torch.Tensor):
        return net(batch).pow(2).sum(), torch.tensor(batch.numel())

    return loss


def test_no_peak_no_counting_and_no_metric():
    """On a CPU (no peak) nothing is counted and no `mfu` is reported."""
    net = model(False)
    meter = StepFlops(torch.device("cpu"))
    assert meter.peak is None
    assert meter.count_once(trainer_for(net), [torch.randn(B, IN)], loss_fn(net), B) == 0.0
    assert meter.metrics(B, 1.0) == {}


def test_the_counting_pass_changes_nothing_and_scales_by_work():
    """With a peak given, the first step's micro-batches are counted once (forward and
    backward, weights, gradients and RNG untouched); an epoch's MFU is FLOPs per unit of
    work x work / seconds / peak."""
    net = model(False)
    trainer = trainer_for(net)
    halves = [torch.randn(B // 2, IN), torch.randn(B // 2, IN)]
    before = {k: v.clone() for k, v in net.state_dict().items()}
    rng = torch.get_rng_state()
    meter = StepFlops(torch.device("cpu"), peak_flops=1e9)
    assert meter.count_once(trainer, halves, loss_fn(net), work=B) > 0
    per_row = (2 * IN * IN * 2) + (2 * IN * OUT * 2)  # as in the test above, per row
    assert meter.per_work == per_row
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert all(p.grad is None for p in net.parameters())
    assert torch.equal(rng, torch.get_rng_state())
    assert meter.count_once(trainer, halves, loss_fn(net), work=B) == 0.0  # once a trial
    assert meter.metrics(work=10 * B, seconds=2.0) == {"mfu": per_row * 10 * B / 2.0 / 1e9}
