"""Frame sharing: the deduplicated forward equals the per-window one, and the batches that
make sharing possible still see every window once per epoch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.exactness import assert_reordered_close, assert_same_loss
from tests.trainables.mobile_vla.test_trainable import step_terms
from trainables.mobile_vla.batching_config import BatchingConfig, frames_per_micro_batch
from trainables.mobile_vla.configuration_mobile_vla import ModelConfig
from trainables.mobile_vla.frame_batches import (
    FrameBatches,
    epoch_steps,
    grouped_order,
    predict,
    split_by_frames,
)
from trainables.mobile_vla.image_features import ImageFeatures, compute_features, weights_key
from trainables.mobile_vla.modeling_mobile_vla import build_policy
from trainables.mobile_vla.tokenizer import encode_instructions
from trainables.training import TrainConfig, TrainingError, epoch_order, plan_batches


def policy_for(data, **overrides):
    torch.manual_seed(0)
    return build_policy(ModelConfig(**overrides), data.instructions)


def loss_and_grads(policy, batch):
    policy.zero_grad(set_to_none=True)
    total, count = policy.compute_loss(predict(policy, batch), batch["target"], batch["mask"])
    (total / count).backward()
    grads = {n: p.grad.clone() for n, p in policy.named_parameters() if p.requires_grad}
    return total.detach(), grads


def assert_same_loss_and_gradients(got, want, windows: int) -> None:
    """(loss, gradients) of `windows` windows, computed once with frames shared and once
    without (or from cached features): the same sums in another order (tests.exactness)."""
    terms = step_terms(windows)
    assert_same_loss(got[0].item(), want[0].item(), terms)
    for name, grad in want[1].items():
        assert_reordered_close(got[1][name], grad, terms, name)


# Windows from three episodes, one of them cut short: what an episode-grouped step holds.
def some_windows(data) -> np.ndarray:
    episodes = np.unique(data.train.episode)[:3]
    picked = [np.flatnonzero(data.train.episode == e) for e in episodes]
    picked[1] = picked[1][:4]
    return np.concatenate(picked)


def test_deduplicated_forward_equals_per_window_loss_and_gradients(demo_data):
    policy, tokenizer = policy_for(demo_data)
    indices = some_windows(demo_data)
    per_window = FrameBatches(demo_data, tokenizer, torch.device("cpu"), dedup=False)(
        demo_data.train, indices
    )
    shared = FrameBatches(demo_data, tokenizer, torch.device("cpu"), dedup=True)(
        demo_data.train, indices
    )
    assert per_window["rows"] == len(indices) * 8
    assert shared["rows"] == len(np.unique(demo_data.train.frames[indices]))
    assert shared["rows"] * 3 < per_window["rows"]

    loss_ref, grads_ref = loss_and_grads(policy, per_window)
    loss, grads = loss_and_grads(policy, shared)
    assert grads.keys() == grads_ref.keys() and any("lora_B" in n for n in grads)
    assert_same_loss_and_gradients((loss, grads), (loss_ref, grads_ref), len(indices))

    # And the per-window path is the policy's own per-window forward.
    ids, mask = encode_instructions(tokenizer, demo_data.instructions)
    episodes = torch.from_numpy(demo_data.train.episode[indices])
    pixels = torch.from_numpy(demo_data.images[demo_data.train.frames[indices]])
    with torch.no_grad():
        direct = policy(pixels, ids[episodes], mask[episodes])
        torch.testing.assert_close(predict(policy, per_window), direct, rtol=0, atol=0)


def test_precomputed_image_features_give_the_same_loss_and_gradients(demo_data):
    policy, tokenizer = policy_for(demo_data)
    values = compute_features(policy, demo_data.images, "fp32", progress=False)
    features = ImageFeatures(values, "fp32", weights_key(policy), "k")
    indices = some_windows(demo_data)
    device = torch.device("cpu")
    from_pixels = FrameBatches(demo_data, tokenizer, device, dedup=True)(demo_data.train, indices)
    from_cache = FrameBatches(demo_data, tokenizer, device, True, features)(
        demo_data.train, indices
    )
    assert "pixels" not in from_cache and from_cache["image_embeds"].shape[1:] == (8, 64)
    loss_ref, grads_ref = loss_and_grads(policy, from_pixels)
    loss, grads = loss_and_grads(policy, from_cache)
    assert_same_loss_and_gradients((loss, grads), (loss_ref, grads_ref), len(indices))


def flat(steps) -> np.ndarray:
    return np.concatenate([np.concatenate(step) for step in steps])


def test_episode_grouped_steps_see_every_window_at_most_once_in_runs_of_episodes(demo_data):
    train = demo_data.train
    cfg = BatchingConfig()
    plan = plan_batches(TrainConfig(batch_size=16), len(train))
    cap = frames_per_micro_batch(cfg, plan, 8)
    steps = list(epoch_steps(train, cfg, plan, 16, cap, seed=0, epoch=0))
    assert len(steps) == len(train) // 16
    seen = flat(steps)
    assert all(sum(len(m) for m in step) == 16 for step in steps)
    assert len(np.unique(seen)) == len(seen) == 16 * len(steps)  # each window at most once
    # Whole episodes in a row: an episode's windows are contiguous in the epoch's order,
    # so each episode spans at most two steps and changes episode as few times as it can.
    episodes = train.episode[seen]
    runs = 1 + int(np.count_nonzero(np.diff(episodes)))
    assert runs == len(np.unique(episodes))
    dropped = np.setdiff1d(np.arange(len(train)), seen)
    assert len(dropped) == len(train) % 16
    assert np.array_equal(np.sort(grouped_order(train.episode, 0, 0)[len(seen) :]), dropped)
    # A pure function of (seed, epoch): resume replays it; another epoch reshuffles.
    again = np.concatenate(
        [np.concatenate(s) for s in epoch_steps(train, cfg, plan, 16, cap, 0, 0)]
    )
    other = np.concatenate(
        [np.concatenate(s) for s in epoch_steps(train, cfg, plan, 16, cap, 0, 1)]
    )
    assert np.array_equal(seen, again) and not np.array_equal(seen, other)


def test_window_grouping_keeps_iid_sampling(demo_data):
    train = demo_data.train
    cfg = BatchingConfig(batch_grouping="window", frame_dedup=False)
    plan = plan_batches(TrainConfig(batch_size=16, micro_batch_size=4), len(train))
    steps = list(epoch_steps(train, cfg, plan, 16, 4 * 8, seed=0, epoch=2))
    assert [len(m) for m in steps[0]] == [4, 4, 4, 4]  # micro_batch_size windows each
    seen = flat(steps)
    assert np.array_equal(seen, epoch_order(len(train), 0, 2)[: len(seen)])


@pytest.mark.parametrize("cap", [8, 12, 20, 64])
def test_micro_batches_are_sized_by_distinct_frames(demo_data, cap):
    train = demo_data.train
    indices = grouped_order(train.episode, 0, 0)[:40]
    parts = split_by_frames(indices, train.frames, cap, dedup=True)
    assert np.array_equal(np.concatenate(parts), indices)
    sizes = [len(np.unique(train.frames[p])) for p in parts]
    assert max(sizes) <= cap
    # Greedy: a micro-batch closes only when the next window would not fit.
    for part, after in zip(parts[:-1], parts[1:], strict=True):
        assert len(np.unique(train.frames[np.append(part, after[0])])) > cap
    whole = split_by_frames(indices, train.frames, cap, dedup=False)
    assert all(len(p) * 8 <= max(cap, 8) for p in whole)


def test_a_micro_batch_must_hold_one_window():
    plan = plan_batches(TrainConfig(batch_size=16), 100)
    with pytest.raises(TrainingError, match="micro_batch_frames: 4 is below window_size 8"):
        frames_per_micro_batch(BatchingConfig(micro_batch_frames=4), plan, 8)
    assert frames_per_micro_batch(BatchingConfig(), plan, 8) == 16 * 8
    with pytest.raises(ValueError, match="batch_grouping: 'frames' not one of"):
        BatchingConfig(batch_grouping="frames")
