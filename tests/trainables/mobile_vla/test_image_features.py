"""The sweep-wide cache of frozen image features: reused, invalidated, skipped with a reason."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest
import torch

from trainables.mobile_vla.configuration_mobile_vla import ModelConfig
from trainables.mobile_vla.image_features import (
    FeatureStore,
    load_or_compute,
    precompute_for_sweep,
    weights_key,
)
from trainables.mobile_vla.modeling_mobile_vla import build_policy
from trainables.mobile_vla.trainable import train
from trainables.mobile_vla.trial_config import parse_config

FAST = {"batch_size": 16, "learning_rate": 1e-3, "torch_threads": 2, "max_epochs": 1}


def features(data, store, **model):
    torch.manual_seed(0)
    policy, _ = build_policy(ModelConfig(**model), data.instructions)
    return load_or_compute(policy, data.images, "fp32", store, weights_key(policy), progress=False)


def test_second_use_reads_the_disk_cache(demo_data, tmp_path):
    store = FeatureStore(tmp_path / "features")
    first, how = features(demo_data, store)
    assert how.startswith("computed in ")
    assert first.values.shape == (len(demo_data.images), 8, 64)
    entry = tmp_path / "features" / f"{first.key}.npy"
    written = entry.stat().st_mtime_ns
    again, how = features(demo_data, store)
    assert how == "reused" and again.key == first.key
    assert np.array_equal(again.values, first.values)
    assert entry.stat().st_mtime_ns == written  # read, not rewritten


def test_other_weights_or_frames_are_computed_again(demo_data, tmp_path):
    store = FeatureStore(tmp_path / "features")
    reference, _ = features(demo_data, store)
    other_model, how = features(demo_data, store, tiny_layers=1)
    assert how.startswith("computed") and other_model.weights_key != reference.weights_key
    images = demo_data.images.copy()
    images[5] = 255 - images[5]
    other_frames, how = features(dataclasses.replace(demo_data, images=images), store)
    assert how.startswith("computed") and other_frames.key != reference.key
    assert other_frames.weights_key == reference.weights_key
    assert not np.array_equal(other_frames.values[5], reference.values[5])
    np.testing.assert_array_equal(other_frames.values[6], reference.values[6])
    assert len(list((tmp_path / "features").glob("*.npy"))) == 3


@pytest.mark.parametrize("damage", ["truncate", "shape"])
def test_a_damaged_entry_is_recomputed_with_a_warning(demo_data, tmp_path, damage):
    store = FeatureStore(tmp_path / "features")
    reference, _ = features(demo_data, store)
    entry = tmp_path / "features" / f"{reference.key}.npy"
    if damage == "truncate":
        os.truncate(entry, entry.stat().st_size // 2)
    else:
        np.save(entry, reference.values[:3])
    with pytest.warns(UserWarning, match=f"{entry}: .*recomputing"):
        again, how = features(demo_data, store)
    assert how.startswith("computed")
    assert np.array_equal(again.values, reference.values)
    assert np.load(entry).shape == reference.values.shape  # repaired


def test_trials_use_the_sweeps_features_or_say_why_not(demo_dir, demo_data, tmp_path):
    config = {"data_dir": str(demo_dir), **FAST}
    shared, line = precompute_for_sweep(parse_config(config), demo_data, "cpu")
    assert line.startswith(f"image features: {len(demo_data.images)} frames, ")
    assert "computed in" in line
    assert shared.image_features is not None and demo_data.image_features is None
    _, line = precompute_for_sweep(parse_config(config), demo_data, "cpu")
    assert line.endswith("fp32, reused")

    derived = train(config, lambda *_: None, data=shared)
    assert derived["feature_cache"] == "shared"
    # Another seed: the tiny backbone is the same "pretrained" weights, so still shared.
    assert train({**config, "seed": 3}, lambda *_: None, data=shared)["feature_cache"] == "shared"
    # Features of another backbone are not used: this trial reads its own from the disk
    # cache, where the first precompute_for_sweep above wrote them (same weights, frames,
    # precision and cache folder).
    other, _ = precompute_for_sweep(parse_config({**config, "tiny_layers": 1}), demo_data, "cpu")
    assert train(config, lambda *_: None, data=other)["feature_cache"] == "disk"

    vision = {**config, "train_vision": True}
    _, line = precompute_for_sweep(parse_config(vision), demo_data, "cpu")
    assert line == "image features: computed per step in each trial (train_vision is true)"
    assert train(vision, lambda *_: None, data=shared)["feature_cache"] == (
        "off: train_vision is true"
    )
    connector = {**config, "lora_target": "all_linear"}
    assert train(connector, lambda *_: None, data=shared)["feature_cache"].startswith(
        "off: lora_target all_linear"
    )
    off = {**config, "feature_cache": False}
    assert train(off, lambda *_: None, data=shared)["feature_cache"] == "off (feature_cache: false)"
