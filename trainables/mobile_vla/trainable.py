"""One trial: LoRA fine-tune of the Mobile VLA policy, one report per epoch.

    train(config, report, data=None, checkpoint_dir=None)

`config` is the flat dict a search space produces; `report(metrics, checkpoint_dir)` is
the one hook to the outside (Ray Tune's report, or a printed line when standalone).
Set-up is a handful of named steps (`MobileVLATrial`); the loop is the shared one
(trainables/trial_loop.py).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from trainables.gradient_checkpointing import checkpointed_layers
from trainables.micro_batch import (
    choice_line,
    largest_fitting,
    probe_wanted,
    simulate_oom,
    try_micro_batch,
)
from trainables.mobile_vla.backbone import cast_frozen
from trainables.mobile_vla.batching_config import frames_per_micro_batch
from trainables.mobile_vla.checkpoint import load_trainable, save_trainable
from trainables.mobile_vla.dataset import MobileVLAData, load_dataset
from trainables.mobile_vla.frame_batches import (
    FrameBatches,
    backbone_rows,
    epoch_steps,
    predict,
    split_by_frames,
)
from trainables.mobile_vla.image_features import (
    FeatureStore,
    ImageFeatures,
    load_or_compute,
    weights_key,
)
from trainables.mobile_vla.modeling_mobile_vla import (
    MobileVLAPolicy,
    build_policy,
    parameter_counts,
)
from trainables.mobile_vla.trial_config import TrialConfig, parse_config
from trainables.mobile_vla.windows import Windows, direction_signs
from trainables.training import Trainer, plan_batches
from trainables.trial_loop import Trial, derived_values, trial_function


def features_off(cfg: TrialConfig) -> str | None:
    """Why this trial runs the vision tower every step (logged as `feature_cache`), or None
    when its image tokens stay fixed and can be computed once."""
    if not cfg.batching.feature_cache:
        return "off (feature_cache: false)"
    reason = cfg.model.image_side_trains()
    return f"off: {reason}" if reason else None


def image_features_for(
    policy: MobileVLAPolicy, data: MobileVLAData, cfg: TrialConfig, precision: str, weights: str
) -> tuple[ImageFeatures, str]:
    """The frozen image tokens this trial reads instead of running the vision tower, and
    where they came from: shared by the sweep, this machine's disk cache, or computed here.
    `weights` is the policy's `weights_key`; a sweep's features of other weights are not used."""
    given = data.image_features
    if given is not None and given.weights_key == weights and given.dtype == precision:
        return given, "shared"
    store = FeatureStore.for_cache_dir(cfg.data.cache_dir)
    features, how = load_or_compute(policy, data.images, precision, store, weights, progress=False)
    return features, "disk" if how == "reused" else "computed"


@torch.no_grad()
def evaluate(
    policy: MobileVLAPolicy,
    batches: FrameBatches,
    windows: Windows,
    micro_batches: list[np.ndarray],
    trainer: Trainer,
    action_names: tuple[str, ...],
    bound: float,
) -> dict[str, Any]:
    """val_loss, MAE per action dim in original units, direction accuracy, and the loss
    of each validation episode (`val_loss_per_episode`, in episode order: every trial
    validates on the same episodes, so the tuner can compare configurations pairwise)."""
    policy.eval()
    episode_sums: dict[int, list[float]] = {}  # episode -> [loss sum, real targets]
    abs_err = torch.zeros(len(action_names), dtype=torch.float64)
    agree, real = 0, 0
    for indices in micro_batches:
        batch = batches(windows, indices)
        with trainer.autocast():
            pred = predict(policy, batch)
        add_episode_losses(policy, pred, batch, windows.episode[indices], episode_sums)
        mask = batch["mask"].bool()
        pred, target = pred.float()[mask], batch["target"][mask]  # (real, A)
        abs_err += ((pred - target).abs() * bound).sum(dim=0).double().cpu()
        agree += int(
            (direction_signs(pred.cpu().numpy()) == direction_signs(target.cpu().numpy())).sum()
        )
        real += target.numel()
    sums = [episode_sums[e] for e in sorted(episode_sums)]
    loss_sum, count = sum(s for s, _ in sums), sum(n for _, n in sums)
    metrics = {"val_loss": loss_sum / count, "direction_acc": agree / real}
    metrics["val_loss_per_episode"] = [s / n for s, n in sums]
    per_dim = abs_err / (real / len(action_names))
    metrics.update({f"mae_{name}": float(v) for name, v in zip(action_names, per_dim, strict=True)})
    return metrics


def add_episode_losses(
    policy: MobileVLAPolicy,
    pred: torch.Tensor,
    batch: dict,
    episodes: np.ndarray,
    sums: dict[int, list[float]],
) -> None:
    """Add this micro-batch's loss sum and target count to each of its episodes."""
    for episode in np.unique(episodes):
        rows = torch.from_numpy(episodes == episode).to(pred.device)
        s, n = policy.compute_loss(pred[rows], batch["target"][rows], batch["mask"][rows])
        total = sums.setdefault(int(episode), [0.0, 0])
        total[0] += s.item()
        total[1] += int(n)


def describe(
    trainer: Trainer, policy: MobileVLAPolicy, frames_cap: int, feature_cache: str
) -> dict:
    """Derived values worth logging beside the hyperparameters. A step's windows are split
    into micro-batches by backbone frames (`micro_batch_frames`), so their number varies
    from step to step: no window micro-batch or accumulation count is what ran."""
    counts, layers = parameter_counts(policy), checkpointed_layers(policy)
    return {
        "micro_batch_frames": frames_cap,
        "feature_cache": feature_cache,
        **derived_values(trainer, counts, layers),
    }


class MobileVLATrial(Trial):
    """The policy, its optimizer and its batches; the loop is trainables.trial_loop's."""

    parse_config = staticmethod(parse_config)
    load_dataset = staticmethod(load_dataset)
    checkpoint_prefix = "vla-ckpt-"
    unit = "window"

    def __init__(self, cfg: TrialConfig, data: MobileVLAData):
        """Set-up in order: model, plan, precision, optimizer, image features, batches."""
        self.cfg, self.data = cfg, data
        self.policy, tokenizer = self.make_policy()
        off = features_off(cfg)
        weights = None if off else self.image_weights_key()  # fp32 weights, before any cast
        plan = plan_batches(cfg.train, len(data.train))
        self.frames_cap = frames_per_micro_batch(cfg.batching, plan, cfg.data.window_size)
        self.trainer = trainer = Trainer(self.policy, cfg.train, plan)
        self.policy.to(trainer.device)
        if trainer.precision != "fp32":
            low = torch.bfloat16 if trainer.precision == "bf16" else torch.float16
            cast_frozen(self.policy, low)
        features, feature_cache = (
            (None, off)
            if off
            else image_features_for(self.policy, data, cfg, trainer.precision, weights)
        )
        dedup = cfg.batching.frame_dedup
        self.batches = FrameBatches(data, tokenizer, trainer.device, dedup, features)
        automatic = not (cfg.batching.micro_batch_frames or cfg.train.micro_batch_size)
        if automatic and probe_wanted(trainer.device):
            self.measure_micro_batch()
        self.val_batches = split_by_frames(
            np.arange(len(data.val)), data.val.frames, self.frames_cap, dedup
        )
        self.derived = describe(trainer, self.policy, self.frames_cap, feature_cache)

    def make_policy(self) -> tuple[MobileVLAPolicy, PreTrainedTokenizerBase]:
        """The policy and tokenizer (a pack of trials builds it on its shared base)."""
        return build_policy(self.cfg.model, self.data.instructions)

    def image_weights_key(self) -> str:
        """`weights_key` of the policy's image side (a pack hashes its base once)."""
        return weights_key(self.policy)

    def measure_micro_batch(self) -> None:
        """The largest frames cap whose heaviest micro-batch fits, halving from the frames
        of a whole optimizer step down to one window; before the first epoch."""
        cfg, train, trainer = self.cfg, self.data.train, self.trainer
        window, dedup = train.frames.shape[1], cfg.batching.frame_dedup
        batch_size = cfg.train.batch_size
        steps = epoch_steps(
            train, cfg.batching, trainer.plan, batch_size, sys.maxsize, cfg.train.seed, 0
        )
        rows = lambda indices: backbone_rows(train.frames, indices, dedup)  # noqa: E731
        heaviest = max((indices for (indices,) in steps), key=rows)  # later steps: cut at the cap

        def try_size(cap: int) -> None:
            part = max(split_by_frames(heaviest, train.frames, cap, dedup), key=rows)
            try_micro_batch(trainer, self.batches(train, part), self.loss)

        largest = rows(heaviest)
        what = f"one window ({window} frames)"
        self.frames_cap = largest_fitting(try_size, largest, window, what, trainer.device)
        print(choice_line("micro_batch_frames", self.frames_cap, largest), flush=True)

    def steps(self, epoch: int) -> Iterator[tuple[list[dict], int]]:
        cfg, train = self.cfg, self.data.train
        plan, frames_cap = self.trainer.plan, self.frames_cap
        for step in epoch_steps(
            train, cfg.batching, plan, cfg.train.batch_size, frames_cap, cfg.train.seed, epoch
        ):
            micro_batches = [self.batches(train, indices) for indices in step]
            yield micro_batches, sum(batch["rows"] for batch in micro_batches)

    def loss(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        simulate_oom(batch["rows"])
        return self.policy.compute_loss(predict(self.policy, batch), batch["target"], batch["mask"])

    def count_targets(self, batch: dict) -> int:
        """Real (unmasked) target elements: what `action_loss` counts."""
        return batch["count"]

    def split(self, batch: dict) -> list[dict]:
        """Halves by window (each rebuilt with its own distinct frames)."""
        indices = batch["indices"]
        if len(indices) < 2:
            return [batch]
        half = len(indices) // 2
        return [self.batches(self.data.train, part) for part in (indices[:half], indices[half:])]

    def throughput(self, rows: int, samples: int, seconds: float) -> dict[str, float]:
        return {"frame_passes_per_window": rows / samples}

    def validate(self) -> dict[str, Any]:
        data = self.data
        if not len(data.val):
            return {}
        return evaluate(
            self.policy,
            self.batches,
            data.val,
            self.val_batches,
            self.trainer,
            data.action_names,
            data.action_bound,
        )

    def save_weights(self, directory: Path) -> None:
        save_trainable(self.policy, directory)

    def load_weights(self, directory: Path) -> None:
        load_trainable(self.policy, directory)


train = trial_function(MobileVLATrial)
