"""Every way an episode file can be broken is named with its path and reason."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from tests.trainables.mobile_vla.episodes import solid_frames, write_episode
from trainables.mobile_vla.episode_format import (
    EpisodeError,
    decode_images,
    inspect_episode,
    scenario_of,
)

GOOD_ACTIONS = np.zeros((10, 3), np.float32)
GOOD_IMAGES = solid_frames([(0, 0, 255)] * 10)


def broken_episodes(root):
    """(path, expected reason fragment) for each kind of bad file."""
    cases = []

    def add(name, reason, **kwargs):
        cases.append((write_episode(root / name, **kwargs), reason))

    (root / "episode_20250101_000000_text.h5").write_text("not hdf5 at all")
    cases.append((root / "episode_20250101_000000_text.h5", "not an HDF5 file"))
    add("episode_20250101_000001_noimg.h5", "missing dataset 'images'", actions=GOOD_ACTIONS)
    add("episode_20250101_000002_noact.h5", "missing dataset 'actions'", images=GOOD_IMAGES)
    add(
        "episode_20250101_000003_len.h5",
        "length mismatch: 10 images but 9 actions",
        images=GOOD_IMAGES,
        actions=GOOD_ACTIONS[:9],
    )
    add(
        "episode_20250101_000004_dtype.h5",
        "'images' must be uint8, got float32",
        images=GOOD_IMAGES.astype(np.float32),
        actions=GOOD_ACTIONS,
    )
    add(
        "episode_20250101_000005_rank.h5",
        "'actions' must have shape (T, 3), got (10,)",
        images=GOOD_IMAGES,
        actions=GOOD_ACTIONS[:, 0],
    )
    add(
        "episode_20250101_000006_imgrank.h5",
        "'images' must have shape (T, H, W, 3), got (10, 12, 16)",
        images=GOOD_IMAGES[..., 0],
        actions=GOOD_ACTIONS,
    )
    nan = GOOD_ACTIONS.copy()
    nan[4, 1] = np.nan
    add(
        "episode_20250101_000007_nan.h5",
        "non-finite action (NaN or inf) at frame 4",
        images=GOOD_IMAGES,
        actions=nan,
    )
    inf = GOOD_ACTIONS.copy()
    inf[7, 0] = np.inf
    add(
        "episode_20250101_000008_inf.h5",
        "non-finite action (NaN or inf) at frame 7",
        images=GOOD_IMAGES,
        actions=inf,
    )
    add(
        "episode_20250101_000009_short.h5",
        "5 frames, fewer than one window of 8",
        images=GOOD_IMAGES[:5],
        actions=GOOD_ACTIONS[:5],
    )
    add(
        "episode_20250101_000010_intact.h5",
        "'actions' must be floating point, got int64",
        images=GOOD_IMAGES,
        actions=np.zeros((10, 3), np.int64),
    )
    return cases


def test_each_broken_file_is_named_with_its_reason(tmp_path):
    for path, reason in broken_episodes(tmp_path):
        with pytest.raises(EpisodeError) as info:
            inspect_episode(path, min_frames=8)
        assert str(info.value) == f"{path}: {reason}" or reason in str(info.value)
        assert str(info.value).startswith(f"{path}: ")
        assert reason in str(info.value)


def test_truncated_file_is_reported_not_crashed_on(tmp_path):
    path = write_episode(tmp_path / "episode_x.h5", images=GOOD_IMAGES, actions=GOOD_ACTIONS)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(EpisodeError, match="episode_x.h5: "):
        inspect_episode(path)


def test_good_file_is_read_without_pixels(tmp_path):
    actions = np.arange(30, dtype=np.float32).reshape(10, 3)
    path = write_episode(
        tmp_path / "episode_20251114_101500_1box_vert_left.h5",
        images=GOOD_IMAGES,
        actions=actions,
        instruction="go left",
    )
    info = inspect_episode(path, min_frames=8)
    assert info.num_frames == 10
    assert info.image_shape == (12, 16)
    np.testing.assert_array_equal(info.actions, actions)
    assert info.event_types[:2] == ["episode_start", "start_action"]
    assert info.instruction == "go left"
    assert info.scenario == "1box_vert_left"
    assert info.attrs["episode_name"] == path.stem


def test_file_without_instruction_reads_as_none(tmp_path):
    path = write_episode(tmp_path / "episode_a.h5", images=GOOD_IMAGES, actions=GOOD_ACTIONS)
    assert inspect_episode(path).instruction is None


def test_decode_turns_bgr_into_rgb_and_resizes(tmp_path):
    frames = solid_frames([(255, 0, 0), (0, 128, 255)], height=72, width=128)  # BGR
    path = write_episode(tmp_path / "episode_c.h5", images=frames, actions=np.zeros((2, 3)))
    decoded = decode_images(path, (28, 28))
    assert decoded.shape == (2, 28, 28, 3) and decoded.dtype == np.uint8
    np.testing.assert_array_equal(decoded[0, 5, 5], [0, 0, 255])  # blue in RGB
    np.testing.assert_array_equal(decoded[1, 20, 3], [255, 128, 0])  # orange in RGB


def test_decode_of_corrupt_image_chunk_names_the_file(tmp_path):
    path = write_episode(
        tmp_path / "episode_d.h5",
        images=np.random.default_rng(0).integers(0, 255, (2, 32, 32, 3), dtype=np.uint8),
        actions=np.zeros((2, 3), np.float32),
    )
    with h5py.File(path, "r") as f:
        offset = f["images"].id.get_chunk_info(1).byte_offset
    raw = bytearray(path.read_bytes())
    raw[offset : offset + 64] = b"\xff" * 64
    path.write_bytes(bytes(raw))
    with pytest.raises(EpisodeError, match=r"episode_d.h5: cannot decode images"):
        decode_images(path, (8, 8))


def test_scenario_from_file_name():
    assert scenario_of("/x/episode_20250808_123136_2box_hori_right.h5") == "2box_hori_right"
    assert scenario_of("other_name.h5") == "other_name"
