"""A trial on a CUDA card reports its own MFU (`pytest -m gpu`); skipped where there is none."""

from __future__ import annotations

import pytest
import torch

from trainables.flops import device_peak_flops
from trainables.mobile_vla.trainable import train

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_a_cuda_trial_logs_its_mfu_each_epoch(demo_dir, tmp_path):
    if device_peak_flops(torch.device("cuda", 0)) is None:
        pytest.skip(f"{torch.cuda.get_device_name(0)}: no dense bf16 peak in the table")
    reports = []
    flat = {"data_dir": str(demo_dir), "device": "cuda", "batch_size": 8, "max_epochs": 2,
            "cache_dir": str(tmp_path)}  # fmt: skip
    train(flat, lambda metrics, _: reports.append(metrics))
    assert len(reports) == 2
    assert all(0 < r["mfu"] < 1 for r in reports), [r.get("mfu") for r in reports]
