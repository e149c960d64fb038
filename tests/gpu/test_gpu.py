"""The GPU path on a real CUDA device (`pytest -m gpu`); skipped where there is none.

Needs only torch, transformers, peft, h5py, numpy and pytest: a bare CUDA image runs it.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from trainables.mobile_vla.checkpoint import ADAPTER_DIR
from trainables.mobile_vla.configuration_mobile_vla import ModelConfig
from trainables.mobile_vla.export_model import prepare_writer
from trainables.mobile_vla.frame_batches import FrameBatches, grouped_order, predict
from trainables.mobile_vla.inference import Policy
from trainables.mobile_vla.modeling_mobile_vla import build_policy
from trainables.mobile_vla.trainable import train

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


# A tiny-config backbone of real width: one optimizer step of 128 windows (~210 frames)
# needs ~4 GB of activations, so a 2 GiB share of the card cannot hold it.
WIDE = {"tiny_hidden": 1024, "tiny_heads": 16, "tiny_latent_query_num": 64,
        "tiny_image_size": 224, "tiny_layers": 4}  # fmt: skip


def run_trial(flat: dict, keep=None) -> list[dict]:
    reports = []

    def report(metrics: dict, checkpoint_dir: str) -> None:
        reports.append(metrics)
        if keep is not None:
            shutil.rmtree(keep, ignore_errors=True)
            shutil.copytree(checkpoint_dir, keep)

    train(flat, report)
    return reports


def lora_b_norm(checkpoint) -> float:
    """LoRA's B matrices start at zero: their norm is how far the adapter moved."""
    weights = load_file(checkpoint / ADAPTER_DIR / "adapter_model.safetensors")
    return sum(float(v.float().norm()) for k, v in weights.items() if "lora_B" in k)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_a_tiny_trial_trains_in_low_precision(precision, demo_dir, tmp_path):
    flat = {"data_dir": str(demo_dir), "device": "cuda", "precision": precision, "batch_size": 8,
            "learning_rate": 1e-3, "max_epochs": 2, "cache_dir": str(tmp_path)}  # fmt: skip
    reports = run_trial(flat, keep=tmp_path / "ckpt")
    steps = reports[-1]["derived"]["steps_per_epoch"] * 2
    assert reports[-1]["derived"]["precision"] == precision
    assert reports[-1]["train_loss"] < reports[0]["train_loss"]
    assert reports[-1]["val_loss"] < reports[0]["val_loss"]
    assert lora_b_norm(tmp_path / "ckpt") > 0
    # The GradScaler may skip a few steps while it finds its scale; bf16 needs none.
    skipped = reports[-1]["skipped_steps"]
    assert skipped <= (4 if precision == "fp16" else 0), f"{skipped} of {steps} steps skipped"
    assert np.isfinite([r["train_loss"] for r in reports]).all()


def test_trainable_weights_stay_fp32_masters_under_fp16(demo_data):
    from trainables.mobile_vla.trainable import MobileVLATrial, parse_config

    cfg = parse_config({"data_dir": "unused", "device": "cuda", "precision": "fp16",
                        "batch_size": 8, "cache_dir": None})  # fmt: skip
    trial = MobileVLATrial(cfg, demo_data)
    trainable = [p for p in trial.policy.parameters() if p.requires_grad]
    frozen = [p for p in trial.policy.kosmos.text_model.parameters() if not p.requires_grad]
    assert trainable and all(p.dtype == torch.float32 for p in trainable)
    assert any(p.dtype == torch.float16 for p in frozen)


def test_the_probe_takes_a_larger_micro_batch_on_a_larger_share(demo_dir, tmp_path):
    """A backbone wide enough that one optimizer step's ~210 frames need ~4 GB: a 2 GiB
    share of the card makes the probe halve, a 12 GiB one does not."""
    total = torch.cuda.get_device_properties(0).total_memory
    chosen = {}
    for gib in (2.0, 12.0):
        flat = {"data_dir": str(demo_dir), "device": "cuda", "precision": "bf16",
                "batch_size": 128, "max_epochs": 1, "cache_dir": str(tmp_path),
                "gpu_share": gib * 2**30 / total, **WIDE}  # fmt: skip
        chosen[gib] = run_trial(flat)[-1]["derived"]["micro_batch_frames"]
    assert chosen[12.0] > chosen[2.0] > 0


def test_a_real_out_of_memory_error_splits_the_micro_batch(demo_dir, tmp_path):
    """A fixed micro-batch of a whole step in a 2 GiB share runs out of memory on the card
    (no probe: the micro-batch is not automatic); the trial redoes it as halves and
    trains what the same trial trains in a share that holds it (bf16 noise apart)."""
    total = torch.cuda.get_device_properties(0).total_memory
    flat = {"data_dir": str(demo_dir), "device": "cuda", "precision": "bf16",
            "batch_size": 128, "max_epochs": 1, "cache_dir": str(tmp_path),
            "micro_batch_frames": 4096, **WIDE}  # fmt: skip
    small = run_trial({**flat, "gpu_share": 2 * 2**30 / total})[-1]
    large = run_trial({**flat, "gpu_share": 16 * 2**30 / total})[-1]
    assert small["oom_splits"] > 0 and large["oom_splits"] == 0
    assert small["train_loss"] == pytest.approx(large["train_loss"], rel=2e-2)


def test_checkpointing_gives_the_same_gradients_on_cuda(demo_data):
    """fp32 on the GPU (TF32 off): recomputing in backward changes nothing beyond float
    noise (tolerance: 1e-4 relative to each gradient's norm)."""
    torch.backends.cuda.matmul.allow_tf32 = False
    grads = {}
    for on in (False, True):
        torch.manual_seed(0)
        policy, tokenizer = build_policy(
            ModelConfig(gradient_checkpointing=on), demo_data.instructions
        )
        policy.to("cuda").train()
        batches = FrameBatches(demo_data, tokenizer, torch.device("cuda"), dedup=True)
        batch = batches(demo_data.train, grouped_order(demo_data.train.episode, 0, 0)[:12])
        loss, count = policy.compute_loss(predict(policy, batch), batch["target"], batch["mask"])
        (loss / count).backward()
        grads[on] = {n: p.grad.clone() for n, p in policy.named_parameters() if p.grad is not None}
    assert grads[False].keys() == grads[True].keys() and grads[False]
    for name, g in grads[False].items():
        diff = (grads[True][name] - g).norm() / g.norm().clamp_min(1e-12)
        assert diff < 1e-4, f"{name}: relative difference {diff:.2e}"


def test_an_export_predicts_on_cuda(demo_dir, tmp_path):
    flat = {"data_dir": str(demo_dir), "device": "cuda", "batch_size": 8, "max_epochs": 1,
            "cache_dir": str(tmp_path)}  # fmt: skip
    out = tmp_path / "export"
    run_trial(flat, keep=out)
    prepare_writer(flat).write(out, merge=True)
    frames = np.random.default_rng(0).integers(0, 256, (8, 72, 128, 3), dtype=np.uint8)
    merged = Policy.from_export(out, device="cuda")
    adapter = Policy.from_export(out, device="cuda", form="adapter")
    assert merged.device.type == "cuda"
    got, want = merged.predict(frames, "go forward"), adapter.predict(frames, "go forward")
    assert got.shape == want.shape == (10, 2) and np.isfinite(got).all()
    np.testing.assert_allclose(got, want, atol=0.05)  # merged fp16 vs adapter under autocast


def test_each_trial_in_one_process_has_its_own_memory(demo_dir, tmp_path):
    """Trials one after another in one process (as in a reused Ray worker): each gives
    the card back when it ends and reports its own peak, not the process's."""
    flat = {"data_dir": str(demo_dir), "device": "cuda", "batch_size": 64, "max_epochs": 1,
            "cache_dir": str(tmp_path)}  # fmt: skip
    before = torch.cuda.memory_allocated()
    wide = run_trial({**flat, **WIDE})[-1]["peak_mem_mb"]
    peaks = []
    for _ in range(3):
        peaks.append(run_trial(flat)[-1]["peak_mem_mb"])
        assert torch.cuda.memory_allocated() <= before + 2**20  # nothing left behind
    assert peaks[0] < wide / 2  # its own peak, not the wide trial's before it
    assert peaks[-1] == pytest.approx(peaks[0], rel=0.1)
