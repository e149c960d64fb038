"""The shared loop's arithmetic and guards, on small real torch modules."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from tests.exactness import (
    assert_same_adamw_weights,
    assert_same_first_step,
    assert_same_loss,
    chain_terms,
)
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
    trial_metrics,
)
from trainables.training_state import STATE_FILE, load_training_state, save_training_state


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
        weights = {"weight": model.linear.weight.detach().clone()}
        results.append((loss, weights, trainer.optimizer.state_dict()))
    # 16 rows, each through a 4-input linear and a square: what the loss and gradients sum.
    terms = chain_terms(16, 2 * (4 + 1))
    loss_ref, weights_ref, optimizer_ref = results[0]
    for loss, weights, optimizer in results[1:]:
        assert_same_loss(loss, loss_ref, terms)
        assert_same_first_step(optimizer, optimizer_ref, terms)
        assert_same_adamw_weights(weights, weights_ref, lr=0.1, steps=1)


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


def test_skipped_fp16_step_moves_neither_schedule_nor_step_count():
    """A real GradScaler (CPU, enabled) skips the step with an infinite gradient; the
    schedule must stay where it is and the skip must be counted and reported."""
    x, y = regression_batches()
    model = Regression()
    model.unused.requires_grad_(False)
    cfg = TrainConfig(batch_size=16, learning_rate=0.1, warmup_ratio=4.0)  # lr grows per step
    trainer = Trainer(model, cfg, plan_batches(cfg, 16))
    trainer.scaler = torch.amp.GradScaler("cpu", enabled=True)
    count = lambda b: len(b[0])  # noqa: E731
    trainer.step([(x, y)], loss_of(model), count)
    lr, weight = trainer.lr, model.linear.weight.detach().clone()
    assert trainer.global_step == 1 and trainer.scheduler.last_epoch == 1

    def overflowing(batch):
        loss, n = loss_of(model)(batch)
        return loss * math.inf, n

    trainer.step([(x, y)], overflowing, count)
    assert (trainer.global_step, trainer.scheduler.last_epoch, trainer.skipped_steps) == (1, 1, 1)
    assert trainer.lr == lr and torch.equal(model.linear.weight, weight)
    assert trial_metrics(0, [1.0], [1.0], trainer, 16, 1.0)["skipped_steps"] == 1
    assert trainer.state_dict()["skipped_steps"] == 1

    trainer.step([(x, y)], loss_of(model), count)
    assert (trainer.global_step, trainer.scheduler.last_epoch, trainer.skipped_steps) == (2, 2, 1)
    assert trainer.lr > lr


def small_trainer() -> Trainer:
    model = Regression()
    model.unused.requires_grad_(False)
    cfg = TrainConfig(batch_size=16)
    return Trainer(model, cfg, plan_batches(cfg, 16))


def draws() -> tuple:
    return random.random(), np.random.normal(size=3).tolist(), torch.rand(3).tolist()


def test_training_state_restores_every_rng_exactly_from_plain_tensors(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    np.random.normal()  # leaves a cached Gaussian in numpy's legacy state
    trainer = small_trainer()
    save_training_state(tmp_path, trainer, 2, {"seed": 0})
    expected = draws()
    # Loadable without unpickling any code: only tensors and plain values inside.
    assert torch.load(tmp_path / STATE_FILE, weights_only=True)["epochs_done"] == 3
    draws()
    assert load_training_state(tmp_path, small_trainer()) == 3
    assert draws() == expected


class RunsCode:
    """What a tampered checkpoint could hold: unpickling it calls open(marker, "w")."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("writer", ["torch.save", "pickle"])
def test_tampered_training_state_is_refused_without_running_it(tmp_path, writer):
    import pickle

    marker = tmp_path / "code_ran"
    state = {"trainer": RunsCode(marker), "rng": {}, "epochs_done": 1}
    if writer == "torch.save":
        torch.save(state, tmp_path / STATE_FILE)
    else:  # a plain pickle where the state file belongs
        (tmp_path / STATE_FILE).write_bytes(pickle.dumps(state, protocol=2))
    with pytest.raises(TrainingError) as info:
        load_training_state(tmp_path, small_trainer())
    assert not marker.exists()
    message = str(info.value)
    assert message.startswith(f"{tmp_path / STATE_FILE}: refused") and "\n" not in message
    assert "io.open" in message  # what it tried to call
