"""How close two float32 computations that are equal in exact arithmetic must be: the
tolerances of the exactness tests, each derived from the arithmetic, never fitted to one
machine's rounding (another x86-64 CPU, or another BLAS blocking, rounds differently).

Two runs that do the same sums in another order (micro-batches, halves after running out
of memory, frames shared between windows, a batch of one versus many) round differently;
what they may differ by follows from float32's unit roundoff, the number of terms a value
accumulates, and the magnitude of those terms. An AdamW step divides the gradient by its
own root mean square: a weight whose gradient is near zero (below Adam's epsilon, or
within rounding of zero) can move by up to about lr in one run and not in the other, so
weights after AdamW are bounded by the learning rate, and the claim itself (the same
gradients) is checked tightly on the optimizer's moments, which are linear in them.

Comparisons that really are bitwise (the same ops on the same shapes in one process: a
resume on CPU, a sweep run twice) stay `torch.equal`.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from trainables.training_state import STATE_FILE

EPS32 = 2.0**-23  # float32 machine epsilon: the spacing of floats in [1, 2)
ADAM_BETAS = (0.9, 0.999)  # torch.optim.AdamW's defaults, as trainables.training uses them


def reordered_rtol(terms: int) -> float:
    """Relative difference allowed between two float32 results that accumulate the same
    `terms` terms in different orders or blockings.

    Each ordering of a sum of n terms is within (n - 1) u sum|x_i| of the exact sum, u =
    eps / 2 (Higham, Accuracy and Stability of Numerical Algorithms, 2nd ed., eq. 4.4);
    errors along a chain of reductions add to first order. Two orderings differ by at most
    twice that: 2 (n - 1) u = (n - 1) eps, relative to the magnitude of the terms, for
    which the callers pass the compared values' own scale (largest entry of a tensor, or
    the value itself for sums of one sign such as a loss).
    """
    return max(terms - 1, 1) * EPS32


def chain_terms(rows: int, chain: int) -> int:
    """The terms a value of a model's forward or backward pass accumulates, counted
    generously: a sum over the `rows` a step reaches (loss elements, or the rows x tokens a
    weight's gradient sums over), at the end of a chain of reductions (matmuls, norms,
    softmaxes, attention over tokens, forward then backward) whose lengths add up to
    `chain`. To first order, rounding errors along a chain add: rows + chain."""
    return rows + chain


def assert_reordered_close(got: torch.Tensor, want: torch.Tensor, terms: int, what: str) -> None:
    """`got` equals `want` up to reordering `terms` accumulated terms, on the scale of
    `want`'s largest entry (see `reordered_rtol`)."""
    scale = want.abs().max().item() if want.numel() else 0.0
    atol = reordered_rtol(terms) * scale
    torch.testing.assert_close(got, want, rtol=0, atol=atol, msg=lambda m: f"{what}: {m}")


def assert_same_loss(got: float, want: float, terms: int) -> None:
    """A mean of non-negative per-element losses (no cancellation: the value is its own
    scale), accumulated from `terms` terms in another order."""
    assert got == pytest.approx(want, rel=reordered_rtol(terms), abs=0)


def adam_step_bound(step: int, betas: tuple[float, float] = ADAM_BETAS) -> float:
    """The largest |m_hat / sqrt(v_hat)| Adam's step `step` (1-based) can take, per
    element, whatever the gradients: by Cauchy-Schwarz on m_hat = sum a_k g_k and
    v_hat = sum b_k g_k^2 (bias-corrected weights a_k, b_k), |m_hat| <= sqrt(sum a_k^2 /
    b_k) sqrt(v_hat). It is 1 at step 1 (m_hat = g, v_hat = g^2); epsilon only lowers it."""
    b1, b2 = betas
    total = 0.0
    for k in range(1, step + 1):
        a = (1 - b1) * b1 ** (step - k) / (1 - b1**step)
        b = (1 - b2) * b2 ** (step - k) / (1 - b2**step)
        total += a * a / b
    return math.sqrt(total)


def adamw_weight_atol(lr: float, steps: int) -> float:
    """How far apart one weight may end after `steps` AdamW steps from the same start, at
    learning rates <= `lr`, on gradients equal up to rounding.

    Each step moves a weight by lr |m_hat / (sqrt(v_hat) + eps)| <= lr R_s
    (`adam_step_bound`); where the gradient is within rounding of zero, or below Adam's
    epsilon, the two runs' steps can be anything in that range, so they differ by at most
    2 lr R_s. Decoupled weight decay multiplies both by the same (1 - lr wd) <= 1, which
    shrinks a difference, never grows it.
    """
    return sum(2 * lr * adam_step_bound(s) for s in range(1, steps + 1))


def assert_same_adamw_weights(
    got: dict[str, torch.Tensor], want: dict[str, torch.Tensor], lr: float, steps: int
) -> None:
    """The same tensors, each weight within `adamw_weight_atol`."""
    assert got.keys() == want.keys()
    atol = adamw_weight_atol(lr, steps)
    for name, tensor in want.items():
        torch.testing.assert_close(got[name], tensor, rtol=0, atol=atol, msg=name)


def checkpoint_optimizer(checkpoint: Path) -> dict:
    """The optimizer's state_dict a checkpoint's training state holds."""
    return torch.load(checkpoint / STATE_FILE, weights_only=True)["trainer"]["optimizer"]


def assert_same_moments(got: dict, want: dict, terms: int) -> None:
    """Two optimizers (state_dicts) at the same step hold the same Adam moments up to
    reordering: the first moment is linear in the gradients (`terms` terms), the second in
    their squares (twice the relative error: 2 x the terms). The parameter order is the
    model's, the same in both."""
    ours, theirs = got["state"], want["state"]
    assert ours.keys() == theirs.keys() and theirs, "no optimizer state to compare"
    for index, state in theirs.items():
        assert int(state["step"]) == int(ours[index]["step"]), f"parameter {index}: steps"
        for key, factor in (("exp_avg", 1), ("exp_avg_sq", 2)):
            what = f"parameter {index} {key}"
            assert_reordered_close(ours[index][key], state[key], factor * terms, what)


def assert_same_first_step(got: dict, want: dict, terms: int) -> None:
    """Two optimizers that took one step from the same start took the same step: Adam's
    moments after step 1 are (1 - b1) g and (1 - b2) g^2, equal up to reordering."""
    assert {int(s["step"]) for s in want["state"].values()} == {1}, "not a first step"
    assert_same_moments(got, want, terms)


def assert_far_from_adams_epsilon(first_step: dict, terms: int) -> None:
    """After step 1 (`first_step`, an optimizer's state_dict), every gradient entry is far
    above Adam's epsilon (1e-8) and its own rounding bound (1000x): there AdamW's step
    g / (|g| + eps) moves by at most |dg| eps / g^2, far below rounding, so two runs that
    agree on step 1's gradient leave it with the same weights up to rounding, and their
    later steps can be compared as reorderings too. (A property of the test's data and
    model, the same on every machine, checked rather than assumed.)"""
    for index, state in first_step["state"].items():
        g = state["exp_avg"].abs() / (1 - ADAM_BETAS[0])
        noise = reordered_rtol(terms) * g.max().item()
        smallest = g.min().item()
        assert smallest > 1000 * max(1e-8, noise), f"parameter {index}: |g| = {smallest:.3g}"
