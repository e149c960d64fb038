"""The packed LoRA linear against peft's own single-adapter LoRA."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch import nn

from trainables.packing.lora import MemberRNG, Segments, pack_linears, shared_copy
from trainables.training_state import rng_state

# float64 throughout: the packed base matmul runs over both members' rows at once and may
# sum in another order than over one member's; with u = 2**-53 and 16-term dot products
# over three layers, results agree to ~3 * 16 * u = 5e-15 relatively (margin for
# the backward's sums over 15 rows and positions: 1e-13).
RTOL = 1e-13


@pytest.fixture
def float64():
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


def frozen_base() -> nn.Module:
    torch.manual_seed(0)
    base = nn.Sequential(
        nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 4)
    )
    return base.requires_grad_(False)


def member(base: nn.Module, seed: int, r: int, alpha: float, dropout: float) -> nn.Module:
    """A trial's peft model on a shared copy of the base, B made non-zero."""
    torch.manual_seed(seed)
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=r"[02]")
    model = get_peft_model(shared_copy(base), config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_()
    return model


def test_each_member_gets_peft_output_and_gradients_on_its_rows(float64):
    base = frozen_base()
    members = {"a": member(base, 1, 4, 8.0, 0.0), "b": member(base, 2, 2, 4.0, 0.25)}
    inputs = {"a": torch.randn(3, 5, 8), "b": torch.randn(2, 5, 8)}
    seeds = {"a": 11, "b": 12}

    alone = {}
    for key, model in members.items():
        torch.manual_seed(seeds[key])  # dropout draws of the trial alone
        out = model(inputs[key])
        out.square().sum().backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        alone[key] = (out.detach(), grads)
        model.zero_grad()

    segments = Segments()
    packed = shared_copy(base)
    linears = pack_linears(packed, r"[02]", segments)
    assert sorted(linears) == ["0", "2"]
    for key, model in members.items():
        torch.manual_seed(seeds[key])
        rng = MemberRNG(rng_state())
        for name, linear in linears.items():
            linear.attach(key, model.get_submodule(f"base_model.model.{name}"), rng)
    torch.manual_seed(99)  # the pack's own generator: not what the members draw
    segments.set([("a", 3), ("b", 2)])
    out = packed(torch.cat([inputs["a"], inputs["b"]]))
    out.square().sum().backward()

    for key, rows in (("a", slice(0, 3)), ("b", slice(3, 5))):
        expected_out, expected_grads = alone[key]
        torch.testing.assert_close(out[rows].detach(), expected_out, rtol=RTOL, atol=0)
        model = members[key]
        for name, param in model.named_parameters():
            if param.requires_grad:
                # A gradient element sums over rows and positions: its error is relative
                # to the size of the terms, which may cancel, so scale by the largest one.
                want = expected_grads[name]
                atol = RTOL * float(want.abs().max())
                torch.testing.assert_close(param.grad, want, rtol=RTOL, atol=atol)
    assert all(p.grad is None for p in base.parameters())  # the base stays frozen


def test_shared_copy_holds_the_same_tensors():
    base = frozen_base()
    copy = shared_copy(base)
    assert copy is not base and copy[0] is not base[0]
    assert all(a is b for a, b in zip(copy.parameters(), base.parameters(), strict=True))
    copy[0] = nn.Identity()  # the copy's own structure
    assert isinstance(base[0], nn.Linear)
