"""Micro-batches that fit: the probe's halving, and Trainer.step redoing a micro-batch that
ran out of memory as halves, on small real torch modules (the CUDA error is raised by
hand: a GPU cannot exist here)."""

from __future__ import annotations

import pytest
import torch

from tests.exactness import (
    assert_far_from_adams_epsilon,
    assert_same_adamw_weights,
    assert_same_first_step,
    assert_same_loss,
    assert_same_moments,
    chain_terms,
    reordered_rtol,
)
from trainables.micro_batch import (
    OOM_TEST_ENV,
    largest_fitting,
    probe_wanted,
    set_memory_share,
    simulate_oom,
)
from trainables.training import TrainConfig, Trainer, TrainingError, halved, plan_batches

CPU = torch.device("cpu")
CUDA_MESSAGE = (
    "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of "
    "23.68 GiB of which 1.06 GiB is free."
)


class OomInBackward(torch.autograd.Function):
    """Identity whose backward runs out of memory, as a too-large micro-batch's would."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        raise torch.cuda.OutOfMemoryError(CUDA_MESSAGE)


class TwoLinear(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a = torch.nn.Linear(4, 1)
        self.b = torch.nn.Linear(4, 1)


# 16 rows, each through two 4-input linears, a sum and a square: what the loss and the
# gradients accumulate (tests.exactness.chain_terms).
TERMS = chain_terms(16, 2 * (4 + 1 + 2))


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: param.detach().clone() for name, param in model.named_parameters()}


def loss_above(model: TwoLinear, limit: int):
    """Squared error whose backward fails for more than `limit` rows, after the gradient
    of `a` has already arrived (its nodes are newer, so autograd runs them first)."""

    def loss_fn(batch):
        x, y = batch
        hb = model.b(x)
        if len(x) > limit:
            hb = OomInBackward.apply(hb)
        return ((model.a(x) + hb - y) ** 2).sum(), torch.tensor(len(x))

    return loss_fn


def halves(batch):
    x, y = batch
    if len(x) < 2:
        return [batch]
    h = len(x) // 2
    return [(x[:h], y[:h]), (x[h:], y[h:])]


def data(n=16):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(n, 4, generator=gen)
    return x, x.sum(dim=1, keepdim=True)


def trainer_for(model: torch.nn.Module) -> Trainer:
    cfg = TrainConfig(batch_size=16, learning_rate=0.1, grad_clip=0)
    return Trainer(model, cfg, plan_batches(cfg, 16))


def count(batch) -> int:
    return len(batch[0])


def test_a_failed_backward_leaves_a_partial_gradient_behind():
    """The premise of the next test: plain backward keeps what arrived before the error."""
    model = TwoLinear()
    loss, _ = loss_above(model, 4)(data())
    with pytest.raises(torch.cuda.OutOfMemoryError):
        loss.backward()
    assert model.a.weight.grad is not None and model.b.weight.grad is None


def test_a_micro_batch_out_of_memory_is_redone_as_halves_with_the_same_result():
    x, y = data()
    micro_batches = [(x[:4], y[:4]), (x[4:], y[4:])]  # 4 rows fit, 12 rows do not
    reference = TwoLinear()
    plain = trainer_for(reference)
    expected_loss, expected_norm = plain.step(micro_batches, loss_above(reference, 99), count)

    model = TwoLinear()
    trainer = trainer_for(model)
    loss, norm = trainer.step(micro_batches, loss_above(model, 4), count, halves, "row")
    # 12 -> 6 + 6 -> 3 + 3 + 3 + 3: three splits, none of the failed tries' gradients kept.
    assert trainer.oom_splits == 3 and trainer.global_step == 1
    assert_same_loss(loss, expected_loss, TERMS)
    # The norm sums the gradients' squares: twice their relative error, and one term each.
    assert norm == pytest.approx(expected_norm, rel=reordered_rtol(2 * TERMS + 10))
    assert_same_first_step(trainer.optimizer.state_dict(), plain.optimizer.state_dict(), TERMS)
    assert_far_from_adams_epsilon(plain.optimizer.state_dict(), TERMS)  # step 2 as exact
    assert_same_adamw_weights(weights(model), weights(reference), lr=0.1, steps=1)
    assert trainer.state_dict()["oom_splits"] == 3

    # The next step halves its micro-batches twice before they run (4 -> 1 + 1 + 1 + 1,
    # 12 -> 3 + 3 + 3 + 3): it runs out of memory no more, and still matches.
    assert len(halved(micro_batches, halves, 2)) == 8
    expected_loss, _ = plain.step(micro_batches, loss_above(reference, 99), count)
    loss, _ = trainer.step(micro_batches, loss_above(model, 4), count, halves, "row")
    assert trainer.oom_splits == 3 and trainer.halvings == 2 and trainer.global_step == 2
    assert_same_loss(loss, expected_loss, TERMS)
    assert_same_moments(trainer.optimizer.state_dict(), plain.optimizer.state_dict(), 2 * TERMS)
    assert_same_adamw_weights(weights(model), weights(reference), lr=0.1, steps=2)


def test_one_sample_that_does_not_fit_fails_with_one_line_naming_the_memory():
    model = TwoLinear()
    trainer = trainer_for(model)
    with pytest.raises(TrainingError) as info:
        trainer.step([data()], loss_above(model, 0), count, halves, "row")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("one row does not fit in device memory (it needed 2.00 GiB more)")
    for option in ("gradient_checkpointing: true", "precision", "--gpus-per-trial"):
        assert option in message
    assert all(p.grad is None for p in model.parameters())  # nothing half-accumulated
    with pytest.raises(TrainingError, match="one sample does not fit"):  # no way to split
        trainer.step([data()], loss_above(model, 4), count)


def test_probe_halves_until_a_size_fits():
    tried = []

    def try_size(size):
        tried.append(size)
        simulate_oom(size)

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(OOM_TEST_ENV, "20")
        assert probe_wanted(CPU)
        assert largest_fitting(try_size, 144, 8, "one window (8 frames)", CPU) == 18
        assert tried == [144, 72, 36, 18]
        tried.clear()
        assert largest_fitting(try_size, 12, 8, "one window (8 frames)", CPU) == 12
        mp.setenv(OOM_TEST_ENV, "7")
        with pytest.raises(TrainingError) as info:
            largest_fitting(try_size, 40, 8, "one window (8 frames)", CPU)
    assert tried == [12, 40, 20, 10, 8]  # never below one window
    assert str(info.value).startswith(
        f"one window (8 frames) does not fit in device memory (CUDA out of memory "
        f"(test hook {OOM_TEST_ENV}=7): 8 rows): lower it with gradient_checkpointing: true"
    )
    assert not probe_wanted(CPU)  # without the hook, CPU keeps today's micro-batch


def test_memory_share_changes_nothing_on_cpu():
    set_memory_share(CPU, 0.5)  # a no-op; CUDA's limit is tested on the GPU
    simulate_oom(10**9)  # the hook is off: nothing raised
