"""Exact window, chunk and mask values, and the episode split."""

from __future__ import annotations

import numpy as np

from trainables.mobile_vla.windows import make_windows, normalize_actions, split_episodes


def test_normalize_clips_and_scales_selected_dims():
    actions = np.array([[1.15, -1.15, 0.5], [2.3, 0.575, -9.0]], np.float32)
    np.testing.assert_allclose(
        normalize_actions(actions, [0, 1], 1.15), [[1.0, -1.0], [1.0, 0.5]], rtol=1e-6
    )
    np.testing.assert_allclose(
        normalize_actions(actions, [0, 2], 1.0), [[1.0, 0.5], [1.0, -1.0]], rtol=1e-6
    )


def test_windows_chunks_and_mask_exact():
    # Two episodes: 5 frames and 4 frames; action value = 10 * episode + frame.
    offsets = np.array([0, 5, 9])
    actions = np.array([[0], [1], [2], [3], [4], [10], [11], [12], [13]], np.float32)
    w = make_windows([0, 1], offsets, actions, window_size=3, fwd_pred_next_n=2)

    assert len(w) == 3 + 2
    np.testing.assert_array_equal(w.frames, [[0, 1, 2], [1, 2, 3], [2, 3, 4], [5, 6, 7], [6, 7, 8]])
    np.testing.assert_array_equal(w.episode, [0, 0, 0, 1, 1])
    # Last window of episode 0: frames 2,3,4 -> chunks [2,3], [3,4], [4,pad].
    np.testing.assert_array_equal(w.chunks[2, :, :, 0], [[2, 3], [3, 4], [4, 0]])
    np.testing.assert_array_equal(w.mask[2], [[True, True], [True, True], [True, False]])
    # First window of episode 0 never reads past its end.
    np.testing.assert_array_equal(w.chunks[0, :, :, 0], [[0, 1], [1, 2], [2, 3]])
    assert w.mask[0].all()
    # Episode 1 chunks never leak into episode 0 and vice versa.
    np.testing.assert_array_equal(w.chunks[4, :, :, 0], [[11, 12], [12, 13], [13, 0]])
    np.testing.assert_array_equal(w.mask[4, 2], [True, False])
    assert w.chunks.dtype == np.float32 and w.mask.dtype == bool


def test_chunk_longer_than_episode_is_masked():
    offsets = np.array([0, 3])
    actions = np.array([[1.0], [2.0], [3.0]], np.float32)
    w = make_windows([0], offsets, actions, window_size=3, fwd_pred_next_n=5)
    assert len(w) == 1
    np.testing.assert_array_equal(w.mask[0].sum(axis=1), [3, 2, 1])
    np.testing.assert_array_equal(w.chunks[0, 0, :, 0], [1, 2, 3, 0, 0])


def test_no_episodes_gives_empty_windows_of_the_right_shape():
    w = make_windows([], np.array([0]), np.zeros((0, 2), np.float32), 8, 10)
    assert w.frames.shape == (0, 8) and w.chunks.shape == (0, 8, 10, 2)


def test_split_is_deterministic_disjoint_and_order_free():
    names = [f"episode_20251114_10{i:04d}_x.h5" for i in range(40)]
    train, val = split_episodes(names, 0.25, seed=0)
    assert len(val) == 10 and len(train) == 30
    assert not set(train) & set(val) and set(train) | set(val) == set(range(40))
    assert split_episodes(names, 0.25, seed=0) == (train, val)
    # Listing order does not matter: the same names land in validation.
    reversed_names = names[::-1]
    _, val_rev = split_episodes(reversed_names, 0.25, seed=0)
    assert {reversed_names[i] for i in val_rev} == {names[i] for i in val}
    # Another seed gives another split.
    assert split_episodes(names, 0.25, seed=1)[1] != val


def test_split_keeps_one_validation_episode_when_few():
    assert split_episodes(["a", "b"], 0.1) in (([0], [1]), ([1], [0]))
    assert split_episodes(["a"], 0.1) == ([0], [])
    assert split_episodes(["a", "b", "c"], 0.0) == ([0, 1, 2], [])
