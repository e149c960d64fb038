"""`Policy`: what a robot calls agrees with the policy's own per-window forward."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from tests.exactness import assert_reordered_close
from tests.trainables.mobile_vla.test_modeling import FORWARD_TERMS as FORWARD
from trainables.mobile_vla.episode_format import resize_rgb
from trainables.mobile_vla.inference import ExportError, Policy
from trainables.mobile_vla.tokenizer import encode_instructions


def episode(demo_dir):
    path = sorted(demo_dir.glob("episode_*.h5"))[0]
    with h5py.File(path) as f:
        return f["images"][()], f["language_instruction"][0].decode()


def test_predict_matches_the_policy_forward_and_takes_bgr_or_rgb(tiny_checkpoint, demo_dir):
    policy = Policy.from_checkpoint(tiny_checkpoint)
    bgr, instruction = episode(demo_dir)
    window = bgr[2:10]
    chunk = policy.predict(window, instruction, color="bgr")
    assert chunk.shape == (10, 2) and np.abs(chunk).max() <= policy.action_bound

    rgb = np.ascontiguousarray(window[..., ::-1])
    np.testing.assert_array_equal(policy.predict(rgb, instruction), chunk)

    pixels = torch.from_numpy(np.stack([resize_rgb(f, policy.image_size) for f in rgb]))
    ids, mask = encode_instructions(policy.tokenizer, [instruction])
    with torch.no_grad():
        reference = policy.model(pixels[None], ids, mask)[0, -1].numpy() * policy.action_bound
    # The same forward, batched otherwise: a reordering of its chain (tests.exactness).
    assert_reordered_close(torch.from_numpy(chunk), torch.from_numpy(reference), FORWARD, "chunk")


def test_predict_episode_is_predict_at_every_frame(tiny_checkpoint, demo_dir):
    policy = Policy.from_checkpoint(tiny_checkpoint)
    bgr, instruction = episode(demo_dir)
    chunks = policy.predict_episode(bgr, instruction, color="bgr")
    for t in (0, 3, 7, 12, len(bgr) - 1):
        one = policy.predict(bgr[max(0, t - 7) : t + 1], instruction, color="bgr")
        np.testing.assert_allclose(chunks[t], one, atol=1e-5)


def test_bad_frames_and_folders_are_refused(tiny_checkpoint, demo_dir, tmp_path):
    policy = Policy.from_checkpoint(tiny_checkpoint)
    bgr, instruction = episode(demo_dir)
    with pytest.raises(ValueError, match="expected 1 to 8 frames, got 9"):
        policy.predict(bgr[:9], instruction)
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        policy.predict(bgr[:2].astype(np.float32), instruction)
    with pytest.raises(ValueError, match="color"):
        policy.predict(bgr[:2], instruction, color="yuv")
    with pytest.raises(ExportError, match="trial_config.json: missing"):
        Policy.from_export(tmp_path)
