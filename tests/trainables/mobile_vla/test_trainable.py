"""The Mobile VLA trial end to end on CPU: learning, exactness, resume, saving."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file

from tests.exactness import (
    assert_same_adamw_weights,
    assert_same_first_step,
    assert_same_loss,
    chain_terms,
    checkpoint_optimizer,
)
from trainables.config import ConfigError
from trainables.mobile_vla.backbone import load_backbone
from trainables.mobile_vla.checkpoint import load_trainable
from trainables.mobile_vla.configuration_mobile_vla import ModelConfig
from trainables.mobile_vla.frame_batches import FrameBatches, split_by_frames
from trainables.mobile_vla.modeling_mobile_vla import MobileVLAPolicy, build_policy
from trainables.mobile_vla.tokenizer import encode_instructions
from trainables.mobile_vla.trainable import evaluate, parse_config, train
from trainables.mobile_vla.windows import Windows
from trainables.training import Trainer, TrainingError, plan_batches
from trainables.training_state import STATE_FILE

FAST = {"batch_size": 16, "learning_rate": 1e-3, "torch_threads": 2, "lr_schedule": "cosine"}
# The reductions along the tiny policy's forward and backward (tests.exactness.chain_terms),
# their lengths added: a 14 x 14 x 3 patch (588); four transformer layers of norms, q/k/v,
# attention over ~20 tokens, out, fc1 and fc2 (64 or 256 each, ~700 a layer); the latent
# resampler, the LSTM over 8 frames and the head (~1,500); twice, for the backward.
POLICY_CHAIN = 2 * (588 + 4 * 700 + 1_500)


def step_terms(windows: int) -> int:
    """What a value of a step over `windows` windows accumulates: its frames' ~20 tokens
    each (8 frames a window), through the policy's chain."""
    return chain_terms(windows * 8 * 20, POLICY_CHAIN)


def assert_same_steps(got: Recorder, want: Recorder, windows: int, steps: list[int]) -> None:
    """Two runs of one step per epoch (`steps`: the optimizer steps done at each epoch's
    checkpoint) that accumulated each step's gradient differently took the same steps:
    the first step's moments up to reordering, the weights within AdamW's bound, each
    epoch's loss up to reordering (see tests.exactness)."""
    terms = step_terms(windows)
    first = (checkpoint_optimizer(got.checkpoint(1)), checkpoint_optimizer(want.checkpoint(1)))
    assert_same_first_step(*first, terms)
    for epoch, done in enumerate(steps, start=1):
        ours, theirs = (
            trained_weights(got.checkpoint(epoch)),
            trained_weights(want.checkpoint(epoch)),
        )
        assert_same_adamw_weights(ours, theirs, FAST["learning_rate"], done)
        assert_same_loss(
            got.metrics[epoch - 1]["train_loss"], want.metrics[epoch - 1]["train_loss"], terms
        )


class Recorder:
    """A report hook that keeps metrics and copies every checkpoint."""

    def __init__(self, root, stop_after: int | None = None):
        self.root, self.stop_after, self.metrics = root, stop_after, []

    def __call__(self, metrics, checkpoint_dir):
        self.metrics.append(metrics)
        shutil.copytree(checkpoint_dir, self.root / f"epoch{metrics['epoch']}")
        if self.stop_after == metrics["epoch"]:
            raise KeyboardInterrupt("simulated crash")

    def checkpoint(self, epoch):
        return self.root / f"epoch{epoch}"


def config(demo_dir, **overrides):
    return {"data_dir": str(demo_dir), **FAST, **overrides}


def subset(data, n_train):
    """The same data with only the first n_train training windows."""
    w = data.train
    train = Windows(w.frames[:n_train], w.episode[:n_train], w.chunks[:n_train], w.mask[:n_train])
    return dataclasses.replace(data, train=train)


def trained_weights(checkpoint):
    weights = load_file(checkpoint / "policy_head.safetensors")
    weights |= load_file(checkpoint / "adapter" / "adapter_model.safetensors")
    return weights


def untrained_metrics(demo_dir, data):
    """Validation metrics of the freshly built policy, as train() builds it."""
    cfg = parse_config(config(demo_dir))
    torch.manual_seed(cfg.train.seed)
    policy, tokenizer = build_policy(cfg.model, data.instructions)
    trainer = Trainer(policy, cfg.train, plan_batches(cfg.train, len(data.train)))
    batches = FrameBatches(data, tokenizer, torch.device("cpu"), dedup=True)
    micro = split_by_frames(np.arange(len(data.val)), data.val.frames, 128, dedup=True)
    return evaluate(policy, batches, data.val, micro, trainer, data.action_names, data.action_bound)


def window_inputs(data, tokenizer, indices):
    """Per-window model inputs: (B, window, H, W, 3) pixels and each window's instruction."""
    ids, mask = encode_instructions(tokenizer, data.instructions)
    episodes = torch.from_numpy(data.val.episode[indices])
    return torch.from_numpy(data.images[data.val.frames[indices]]), ids[episodes], mask[episodes]


def test_validation_loss_and_mae_fall_within_a_few_epochs(demo_dir, demo_data, tmp_path):
    before = untrained_metrics(demo_dir, demo_data)
    record = Recorder(tmp_path)
    derived = train(config(demo_dir, max_epochs=5), record, data=demo_data)
    first, last = record.metrics[0], record.metrics[-1]
    assert [m["epoch"] for m in record.metrics] == [1, 2, 3, 4, 5]
    assert last["val_loss"] < 0.8 * before["val_loss"]
    assert last["val_loss"] < first["val_loss"]
    assert last["mae_linear_x"] < before["mae_linear_x"]
    assert last["mae_linear_y"] < before["mae_linear_y"]
    assert set(first) >= {
        "train_loss",
        "val_loss",
        "mae_linear_y",
        "direction_acc",
        "lr",
        "samples_per_s",
        "peak_mem_mb",
        "grad_norm",
    }
    assert 0 <= last["direction_acc"] <= 1 and last["peak_mem_mb"] > 0
    # Frame sharing: 16 windows of whole episodes run far fewer than their 8 x 16 frames.
    assert 1 < first["frame_passes_per_window"] < 4 and first["micro_batches_per_step"] == 1
    # Micro-batches are cut by frames: no window micro-batch or accumulation is logged.
    assert derived["micro_batch_frames"] == 16 * demo_data.train.frames.shape[1]
    assert "micro_batch_size" not in derived and "accumulation" not in derived
    assert derived["steps_per_epoch"] == len(demo_data.train) // 16
    assert derived["precision"] == "fp32"


def test_only_lora_action_token_and_head_change(demo_dir, demo_data, tmp_path):
    cfg = parse_config(config(demo_dir))
    torch.manual_seed(cfg.train.seed)
    before = {
        k: v.clone()
        for k, v in build_policy(cfg.model, demo_data.instructions)[0].state_dict().items()
    }
    record = Recorder(tmp_path)
    train(config(demo_dir, max_epochs=1), record, data=subset(demo_data, 32))

    # Rebuild the same policy, load the checkpoint, compare every tensor.
    torch.manual_seed(cfg.train.seed)
    policy, _ = build_policy(cfg.model, demo_data.instructions)
    load_trainable(policy, record.checkpoint(1))
    changed = {k for k, v in policy.state_dict().items() if not torch.equal(v, before[k])}
    assert changed, "nothing trained"
    for name in changed:
        assert "lora_" in name or name == "action_token" or name.startswith("head."), name
    assert any("lora_B" in n for n in changed) and "action_token" in changed


@pytest.mark.parametrize("micro", [1, 4])
def test_micro_batches_do_not_change_the_step(demo_dir, demo_data, tmp_path, micro):
    data = subset(demo_data, 8)
    whole = Recorder(tmp_path / "whole")
    train(config(demo_dir, batch_size=8, micro_batch_size=8, max_epochs=1), whole, data=data)
    split = Recorder(tmp_path / "split")
    train(config(demo_dir, batch_size=8, micro_batch_size=micro, max_epochs=1), split, data=data)
    assert_same_steps(split, whole, windows=8, steps=[1])


def test_resumed_run_matches_uninterrupted_run_exactly(demo_dir, demo_data, tmp_path):
    data = subset(demo_data, 48)
    cfg = config(demo_dir, max_epochs=3, warmup_ratio=0.5)
    straight = Recorder(tmp_path / "straight")
    train(cfg, straight, data=data)

    crashed = Recorder(tmp_path / "crashed", stop_after=2)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, crashed, data=data)
    resumed = Recorder(tmp_path / "resumed")
    train(cfg, resumed, data=data, checkpoint_dir=crashed.checkpoint(2))

    assert [m["epoch"] for m in resumed.metrics] == [3]
    for key in ("train_loss", "val_loss", "lr", "direction_acc"):
        assert resumed.metrics[0][key] == straight.metrics[2][key], key
    final, reference = (
        trained_weights(resumed.checkpoint(3)),
        trained_weights(straight.checkpoint(3)),
    )
    assert all(torch.equal(final[k], reference[k]) for k in reference)
    state = torch.load(resumed.checkpoint(3) / STATE_FILE, weights_only=True)
    assert state["epochs_done"] == 3 and state["trainer"]["global_step"] == 9


def test_checkpoint_adapter_loads_with_peft_and_reproduces_predictions(
    demo_dir, demo_data, tmp_path
):
    record = Recorder(tmp_path)
    train(config(demo_dir, max_epochs=1), record, data=subset(demo_data, 32))
    checkpoint = record.checkpoint(1)
    assert sum(f.stat().st_size for f in checkpoint.rglob("*") if f.is_file()) < 10 * 2**20

    cfg = parse_config(config(demo_dir))
    torch.manual_seed(cfg.train.seed)
    base, tokenizer = load_backbone(cfg.model, demo_data.instructions)
    peft_model = PeftModel.from_pretrained(base, checkpoint / "adapter")
    policy = MobileVLAPolicy(cfg.model, peft_model)
    policy.load_state_dict(load_file(checkpoint / "policy_head.safetensors"), strict=False)

    torch.manual_seed(cfg.train.seed)
    reference, _ = build_policy(cfg.model, demo_data.instructions)
    load_trainable(reference, checkpoint)
    inputs = window_inputs(demo_data, tokenizer, np.arange(4))
    policy.eval(), reference.eval()
    with torch.no_grad():
        expected = reference(*inputs)
        got = policy(*inputs)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_bf16_autocast_runs_on_cpu(demo_dir, demo_data, tmp_path):
    record = Recorder(tmp_path)
    derived = train(
        config(demo_dir, precision="bf16", max_epochs=1), record, data=subset(demo_data, 16)
    )
    assert derived["precision"] == "bf16"
    assert np.isfinite(record.metrics[0]["train_loss"]) and np.isfinite(
        record.metrics[0]["val_loss"]
    )


def test_guards_and_bad_config(demo_dir, demo_data, tmp_path):
    with pytest.raises(TrainingError, match="zero optimizer steps per epoch"):
        train(config(demo_dir, batch_size=512), Recorder(tmp_path), data=demo_data)
    with pytest.raises(ConfigError, match="unknown config key 'lora_rank'"):
        parse_config(config(demo_dir, lora_rank=8))
    with pytest.raises(ConfigError, match="lora_target"):
        parse_config(config(demo_dir, lora_target="everything"))
    with pytest.raises(ConfigError, match="model: .*no_such_model is not a folder on this"):
        parse_config(config(demo_dir, model=str(tmp_path / "no_such_model")))
    # Derived, not configured: the data follows the model's image size and action dims.
    cfg = parse_config(config(demo_dir, action_dims=["linear_x", "linear_y", "angular_z"]))
    assert cfg.model.action_dim == 3 and cfg.data.image_size == ModelConfig().image_size()


def test_standalone_cli_prints_a_line_per_epoch_and_resumes(demo_dir, tmp_path):
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(f"data_dir: {demo_dir}\nbatch_size: 32\nlearning_rate: 1e-3\n")
    cmd = [sys.executable, "-m", "trainables.mobile_vla", "--config", str(cfg_file)]
    run = subprocess.run(
        [*cmd, "--set", "max_epochs=1", "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("epoch 1/1  train_loss ")
    assert (tmp_path / "out" / "checkpoint" / "adapter" / "adapter_config.json").exists()

    again = subprocess.run(
        [*cmd, "--set", "max_epochs=2", "--out", str(tmp_path / "out"), "--resume"],
        capture_output=True,
        text=True,
    )
    assert again.returncode == 0, again.stderr
    assert [line.split("  ")[0] for line in again.stdout.splitlines()] == ["epoch 2/2"]

    bad = subprocess.run([*cmd, "--set", "lerning_rate=1"], capture_output=True, text=True)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().endswith(
        "unknown config key 'lerning_rate' (did you mean 'learning_rate'?)"
    )


def test_validation_reports_the_loss_of_each_episode(demo_dir, demo_data):
    metrics = untrained_metrics(demo_dir, demo_data)
    val = demo_data.val
    episodes = np.unique(val.episode)
    per_episode = metrics["val_loss_per_episode"]
    assert len(per_episode) == len(episodes) >= 2
    # Weighted by each episode's real targets, they give back the scalar val_loss.
    weights = [val.mask[val.episode == e].sum() for e in episodes]
    assert np.average(per_episode, weights=weights) == pytest.approx(metrics["val_loss"], rel=1e-5)
    assert len(set(per_episode)) == len(per_episode)  # really per episode, not one value
