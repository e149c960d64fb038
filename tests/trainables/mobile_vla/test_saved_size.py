"""The checkpoint size a sweep's header estimates, against a checkpoint written for real."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from trainables.mobile_vla.saved_size import checkpoint_bytes
from trainables.mobile_vla.trainable import train
from trainables.mobile_vla.windows import Windows


def folder_bytes(folder: str) -> int:
    return sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file())


@pytest.mark.parametrize("overrides", [{}, {"lora_r": 16, "train_text_embedding": True}])
def test_estimate_is_the_written_checkpoint(demo_dir, demo_data, overrides):
    flat = {"data_dir": str(demo_dir), "batch_size": 16, "max_epochs": 1, "torch_threads": 2}
    flat.update(overrides)
    w = demo_data.train  # one optimizer step is enough to write a full checkpoint
    data = dataclasses.replace(
        demo_data, train=Windows(w.frames[:16], w.episode[:16], w.chunks[:16], w.mask[:16])
    )
    sizes = []
    train(flat, lambda metrics, folder: sizes.append(folder_bytes(folder)), data=data)
    estimate = checkpoint_bytes(flat, data)
    # Beyond 12 bytes per trainable parameter: config, scheduler and RNG state (kilobytes).
    assert 0 < sizes[0] - estimate < 0.02 * estimate + 64_000, (sizes[0], estimate)
