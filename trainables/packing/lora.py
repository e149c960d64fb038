"""One frozen linear, several trials' LoRA adapters, each on its own rows.

peft cannot train several adapters on one batch: its mixed-adapter forward
(`adapter_names=`) refuses training mode, and several active adapters all add their
deltas to every sample. `PackedLoRALinear` replaces a LoRA-targeted `nn.Linear` of the
shared base: the frozen matmul runs once over the rows of every member, and each member's
own peft LoRA layer (its A, B, scaling and dropout, drawn from its own random numbers)
adds its delta to its own contiguous rows. The members' LoRA layers stay theirs, in their
own peft models, so they save and load as an unpacked trial's adapter does.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from peft.tuners.lora import LoraLayer
from torch import nn

from trainables.training_state import rng_state, set_rng_state


class MemberRNG:
    """The random numbers one member draws, as it would draw them training alone.

    `state` is a whole-process RNG state (`trainables.training_state.rng_state`), the one
    its checkpoint saves. `active()` swaps all of it in (building, restoring, saving);
    `drawing(device)` only the generator dropout draws from on `device` (cheap enough to
    wrap each dropout of each layer)."""

    def __init__(self, state: dict):
        self.state = state

    @contextmanager
    def active(self) -> Iterator[None]:
        outer = rng_state()
        set_rng_state(self.state)
        try:
            yield
        finally:
            self.state = rng_state()
            set_rng_state(outer)

    @contextmanager
    def drawing(self, device: torch.device) -> Iterator[None]:
        if device.type == "cuda":
            index = device.index if device.index is not None else torch.cuda.current_device()
            outer = torch.cuda.get_rng_state(index)
            torch.cuda.set_rng_state(self.state["cuda"][index], index)
            try:
                yield
            finally:
                self.state["cuda"][index] = torch.cuda.get_rng_state(index)
                torch.cuda.set_rng_state(outer, index)
            return
        outer = torch.get_rng_state()
        torch.set_rng_state(self.state["torch"])
        try:
            yield
        finally:
            self.state["torch"] = torch.get_rng_state()
            torch.set_rng_state(outer)


@dataclass
class Segment:
    key: str  # the member whose rows these are
    start: int
    stop: int


@dataclass
class Segments:
    """The members' rows in this round's concatenated batch, in order; one object shared
    by every packed linear of a base, set once per round."""

    parts: list[Segment] = field(default_factory=list)

    def set(self, rows: list[tuple[str, int]]) -> None:
        """(member, row count) in batch order -> contiguous segments."""
        self.parts, start = [], 0
        for key, count in rows:
            self.parts.append(Segment(key, start, start + count))
            start += count


class PackedLoRALinear(nn.Module):
    """base(x) over all rows once, plus each member's own LoRA delta on its segment.

    A member's delta is exactly peft's `lora.Linear.forward` for one active adapter
    (input cast to the adapter's dtype, result back to the base's), so a member alone
    gets what its unpacked peft model gets."""

    def __init__(self, base_layer: nn.Linear, segments: Segments):
        super().__init__()
        self.base_layer = base_layer
        self.segments = segments
        # Plain dicts, not submodules: the adapters belong to the members' own models.
        self.adapters: dict[str, LoraLayer] = {}
        self.rngs: dict[str, MemberRNG] = {}

    def attach(self, key: str, layer: LoraLayer, rng: MemberRNG) -> None:
        self.adapters[key], self.rngs[key] = layer, rng

    def detach(self, key: str) -> None:
        self.adapters.pop(key, None)
        self.rngs.pop(key, None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.base_layer(x)
        parts = self.segments.parts
        if not parts:
            return result
        if parts[-1].stop != x.shape[0]:
            raise RuntimeError(f"packed rows: segments cover {parts[-1].stop}, x has {x.shape[0]}")
        dtype = result.dtype
        pieces = [
            self.delta(part.key, x[part.start : part.stop], result[part.start : part.stop])
            for part in parts
        ]
        return torch.cat(pieces).to(dtype)

    def delta(self, key: str, x: torch.Tensor, result: torch.Tensor) -> torch.Tensor:
        layer = self.adapters.get(key)
        if layer is None:  # a member without an adapter here
            return result
        for name in layer.active_adapters:
            if name not in layer.lora_A:
                continue
            lora_a, lora_b = layer.lora_A[name], layer.lora_B[name]
            dropout, scaling = layer.lora_dropout[name], layer.scaling[name]
            x = layer._cast_input_dtype(x, lora_a.weight.dtype)
            if isinstance(dropout, nn.Dropout) and dropout.training and dropout.p > 0:
                with self.rngs[key].drawing(x.device):
                    dropped = dropout(x)
            else:
                dropped = dropout(x)
            result = result + lora_b(lora_a(dropped)) * scaling
        return result


def shared_copy(module: nn.Module) -> nn.Module:
    """A copy of `module`'s tree of modules that holds the very same parameter and buffer
    tensors: no memory but the module objects. Whatever is later put into the copy (peft's
    LoRA layers, packed linears) is the copy's own; moving or casting the shared tensors
    in place (`param.data = ...`) shows in both."""
    clone = copy.copy(module)
    clone.__dict__ = {
        name: type(value)(value) if isinstance(value, (dict, set)) else value
        for name, value in module.__dict__.items()
    }
    clone._modules = {
        name: None if child is None else shared_copy(child)
        for name, child in module._modules.items()
    }
    return clone


def pack_linears(model: nn.Module, pattern: str, segments: Segments) -> dict[str, PackedLoRALinear]:
    """Replace every `nn.Linear` of `model` whose name full-matches `pattern` (peft's rule
    for a string target) by a PackedLoRALinear around it; returns them by name."""
    packed = {}
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Linear) and re.fullmatch(pattern, name):
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            packed[name] = PackedLoRALinear(module, segments)
            setattr(parent, child, packed[name])
    return packed
