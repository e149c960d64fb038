"""The shared loop's arithmetic and guards, on small real torch modules."""

from __future__ import annotations

import math

import pytest
import torch

from trainables.training import (
    TrainConfig,
    Trainer,
    TrainingError,
    build_optimizer,
    epoch_order,
    lr_scale,
    plan_batches,
    resolve_precision,
    step_batches,
)


def test_plan_splits_batch_into_micro_batches():
    plan = plan_batches(TrainConfig(batch_size=128, max_epochs=3), num_train=1000)
    assert (plan.micro_batch_size, plan.accumulation, plan.steps_per_epoch) == (32, 4, 7)
    assert plan.warmup_steps == 2 and plan.total_steps == 21  # round(0.25 * 7)
    plan = plan_batches(TrainConfig(batch_size=512, micro_batch_size=8), num_train=1000)
    assert (plan.micro_batch_size, plan.accumulation, plan.steps_per_epoch) == (8, 64, 1)
    # Automatic micro-batch divides the batch even when the cap does not.
    assert (
        plan_batches(TrainConfig(batch_size=48, max_micro_batch_size=20), 100).micro_batch_size
        == 16
    )


def test_plan_refuses_impossible_batches():
    with pytest.raises(TrainingError, match="batch_size 512 exceeds the 400 training samples"):
        plan_batches(TrainConfig(batch_size=512), num_train=400)
    with pytest.raises(TrainingError, match="not a multiple of micro_batch_size 3"):
        plan_batches(TrainConfig(batch_size=8, micro_batch_size=3), num_train=100)


@pytest.mark.parametrize(
    "key,value",
    [
        ("batch_size", 0),
        ("learning_rate", -1.0),
        ("lr_schedule", "step"),
        ("precision", "fp8"),
        ("min_lr_scale", 2.0),
        ("warmup_ratio", -0.1),
    ],
)
def test_config_rejects_bad_values_by_name(key, value):
    with pytest.raises(ValueError, match=key):
        TrainConfig(**{key: value})


def test_lr_schedule_warmup_then_constant_or_cosine():
    cfg = TrainConfig(batch_size=10, warmup_ratio=0.5, max_epochs=2)
    plan = plan_batches(cfg, num_train=80)  # 8 steps per epoch, 4 warmup, 16 total
    assert [lr_scale(s, plan, cfg) for s in range(5)] == [0.2, 0.4, 0.6, 0.8, 1.0]
    assert lr_scale(15, plan, cfg) == 1.0
    cosine = TrainConfig(
        batch_size=10, warmup_ratio=0.5, max_epochs=2, lr_schedule="cosine", min_lr_scale=0.1
    )
    assert lr_scale(4, plan, cosine) == pytest.approx(1.0)
    assert lr_scale(10, plan, cosine) == pytest.approx(
        0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5))
    )
    assert lr_scale(16, plan, cosine) == pytest.approx(0.1)


def test_weight_decay_on_matrices_only():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
    optimizer = build_optimizer(model, TrainConfig(weight_decay=0.1))
    decayed, plain = optimizer.param_groups
    assert decayed["weight_decay"] == 0.1 and [p.shape for p in decayed["params"]] == [(4, 3)]
    assert plain["weight_decay"] == 0.0 and len(plain["params"]) == 3


def test_epoch_order_is_a_function_of_seed_and_epoch():
    assert (epoch_order(50, 0, 3) == epoch_order(50, 0, 3)).all()
    assert not (epoch_order(50, 0, 3) == epoch_order(50, 0, 4)).all()
    plan = plan_batches(TrainConfig(batch_size=8, micro_batch_size=4), num_train=20)
    steps = list(step_batches(epoch_order(20, 0, 0), plan, 8))
    assert len(steps) == 2 and all(len(s) == 2 and len(s[0]) == 4 for s in steps)


def test_precision_auto_is_fp32_on_cpu_and_fp16_needs_cuda():
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"
    assert resolve_precision("bf16", torch.device("cpu")) == "bf16"
    with pytest.raises(TrainingError, match="fp16 needs a CUDA device"):
        resolve_precision("fp16", torch.device("cpu"))


class Regression(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.linear = torch.nn.Linear(4, 1)
        self.unused = torch.nn.Linear(4, 1)


def regression_batches(n=16):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(n, 4, generator=gen)
    return x, x.sum(dim=1, keepdim=True)


def loss_of(model):
    def loss_fn(batch):
        x, y = batch
        return ((model.linear(x) - y) ** 2).sum(), torch.tensor(len(x))

    return loss_fn


def test_step_averages_over_the_whole_effective_batch():
    x, y = regression_batches()
    results = []
    for splits in (1, 2, 8):
        model = Regression()
        model.unused.requires_grad_(False)
        cfg = TrainConfig(batch_size=16, learning_rate=0.1, grad_clip=0)
        trainer = Trainer(model, cfg, plan_batches(cfg, 16))
        batches = list(zip(x.chunk(splits), y.chunk(splits), strict=True))
        loss, _ = trainer.step(batches, loss_of(model), lambda b: len(b[0]))
        results.append((loss, model.linear.weight.detach().clone()))
    for loss, weight in results[1:]:
        assert loss == pytest.approx(results[0][0], rel=1e-6)
        torch.testing.assert_close(weight, results[0][1], rtol=1e-6, atol=1e-7)


def test_gradient_clipping_is_applied():
    """Adam's first moment after one step is (1 - beta1) x the gradient it was given."""
    x, y = regression_batches()
    for clip in (0.0, 0.01):
        model = Regression()
        model.unused.requires_grad_(False)
        cfg = TrainConfig(batch_size=16, learning_rate=0.1, grad_clip=clip)
        trainer = Trainer(model, cfg, plan_batches(cfg, 16))
        _, norm = trainer.step([(x, y)], loss_of(model), lambda b: len(b[0]))
        moments = [s["exp_avg"] for s in trainer.optimizer.state.values()]
        applied = torch.linalg.vector_norm(torch.stack([m.norm() for m in moments])) / 0.1
        assert norm > 1.0  # the reported norm is the one before clipping
        assert applied.item() == pytest.approx(clip if clip else norm, rel=1e-4)


def test_guards_name_the_problem():
    x, y = regression_batches()
    frozen = Regression().requires_grad_(False)
    with pytest.raises(TrainingError, match="nothing to train"):
        Trainer(frozen, TrainConfig(batch_size=16), plan_batches(TrainConfig(batch_size=16), 16))

    model = Regression()  # `unused` trains but never enters the loss
    cfg = TrainConfig(batch_size=16)
    trainer = Trainer(model, cfg, plan_batches(cfg, 16))
    with pytest.raises(TrainingError, match=r"no gradient reaches 2 trainable .*unused.weight"):
        trainer.step([(x, y)], loss_of(model), lambda b: len(b[0]))

    model = Regression()
    model.unused.requires_grad_(False)
    trainer = Trainer(model, cfg, plan_batches(cfg, 16))
    zero_loss = lambda b: ((model.linear(b[0]) * 0).sum(), torch.tensor(16))  # noqa: E731
    with pytest.raises(TrainingError, match="loss is exactly 0"):
        trainer.step([(x, y)], zero_loss, lambda b: 16)
    with pytest.raises(TrainingError, match="no real \\(unmasked\\) targets"):
        trainer.step([(x, y)], loss_of(model), lambda b: 0)
