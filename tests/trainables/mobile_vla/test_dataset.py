"""A folder of episodes -> decoded, cached, windowed arrays."""

from __future__ import annotations

import io
import pickle
import re

import numpy as np
import pytest

import trainables.mobile_vla.dataset as dataset_module
from tests.trainables.mobile_vla.episodes import solid_frames, write_episode
from trainables.mobile_vla.dataset import DataConfig, DataError, load_dataset
from trainables.mobile_vla.decode_cache import DecodeCache, content_hash
from trainables.mobile_vla.episode_format import decode_images as real_decode


def colour(t: int, e: int) -> tuple[int, int, int]:
    """A distinct BGR colour per (episode, frame)."""
    return (10 * t, 20 * e, 200)


def make_folder(root, episodes=4, frames=10, instruction=True):
    paths = []
    for e in range(episodes):
        actions = np.zeros((frames, 3), np.float32)
        actions[:, 0] = 1.15
        actions[:, 1] = np.linspace(-2, 2, frames)
        side = "left" if e % 2 == 0 else "right"
        paths.append(
            write_episode(
                root / f"episode_20251114_10000{e}_1box_vert_{side}.h5",
                images=solid_frames([colour(t, e) for t in range(frames)]),
                actions=actions,
                instruction=f"go {side}" if instruction else None,
            )
        )
    return paths


def config(root, **overrides) -> DataConfig:
    values = dict(data_dir=str(root), image_size=(6, 8), window_size=4, fwd_pred_next_n=3)
    values.update(overrides)
    return DataConfig(**values)


def test_arrays_windows_and_split(tmp_path):
    make_folder(tmp_path / "data", episodes=4, frames=10)
    data = load_dataset(config(tmp_path / "data", val_ratio=0.25), progress=False)

    assert data.images.shape == (40, 6, 8, 3) and data.images.dtype == np.uint8
    np.testing.assert_array_equal(data.episode_offsets, [0, 10, 20, 30, 40])
    # BGR colour (10t, 20e, 200) comes back as RGB (200, 20e, 10t).
    np.testing.assert_array_equal(data.images[23, 2, 2], [200, 40, 30])
    np.testing.assert_allclose(data.actions[:10, 0], 1.0)
    np.testing.assert_allclose(
        data.actions[:10, 1], np.clip(np.linspace(-2, 2, 10), -1.15, 1.15) / 1.15, rtol=1e-6
    )
    assert data.actions.shape == (40, 2)

    assert len(data.train) + len(data.val) == 4 * (10 - 4 + 1)
    train_eps, val_eps = set(data.train.episode), set(data.val.episode)
    assert len(val_eps) == 1 and not train_eps & val_eps
    # Every window's frames belong to its own episode.
    for windows in (data.train, data.val):
        first = data.episode_offsets[windows.episode]
        last = data.episode_offsets[windows.episode + 1]
        assert ((windows.frames >= first[:, None]) & (windows.frames < last[:, None])).all()
    assert data.instructions == ["go left", "go right", "go left", "go right"]
    assert data.episode_names[0] == "episode_20251114_100000_1box_vert_left.h5"


def test_angular_z_selectable(tmp_path):
    make_folder(tmp_path, episodes=2)
    data = load_dataset(
        config(tmp_path, action_dims=("linear_x", "linear_y", "angular_z")), progress=False
    )
    assert data.actions.shape[1] == 3 and data.train.chunks.shape[-1] == 3


def test_pattern_selects_files(tmp_path):
    make_folder(tmp_path, episodes=4)
    data = load_dataset(config(tmp_path, pattern="*_left.h5"), progress=False)
    assert data.num_episodes == 2


def test_instruction_fallback_map_then_default(tmp_path):
    make_folder(tmp_path, episodes=2, instruction=False)
    cfg = config(tmp_path, instruction_map={"left": "pass on the left", "vert_right": "R"})
    assert load_dataset(cfg, progress=False).instructions == ["pass on the left", "R"]

    cfg = config(tmp_path, instruction_map={"left": "L"}, default_instruction="drive")
    assert load_dataset(cfg, progress=False).instructions == ["L", "drive"]

    with pytest.raises(DataError, match="1box_vert_right.h5: no language_instruction"):
        load_dataset(config(tmp_path, instruction_map={"left": "L"}), progress=False)


def test_bad_files_are_all_named_or_skipped(tmp_path):
    make_folder(tmp_path, episodes=3)
    (tmp_path / "episode_20251114_200000_broken.h5").write_text("junk")
    write_episode(
        tmp_path / "episode_20251114_200001_short.h5",
        images=solid_frames([(0, 0, 0)] * 2),
        actions=np.zeros((2, 3), np.float32),
        instruction="x",
    )
    with pytest.raises(DataError) as info:
        load_dataset(config(tmp_path), progress=False)
    message = str(info.value)
    assert message.splitlines()[0] == "2 of 5 episode files are bad:"
    assert "episode_20251114_200000_broken.h5: not an HDF5 file" in message
    assert "episode_20251114_200001_short.h5: 2 frames, fewer than one window of 4" in message

    data = load_dataset(config(tmp_path, skip_bad=True), progress=False)
    assert data.num_episodes == 3 and len(data.skipped) == 2


def test_missing_dir_and_no_match_are_clear(tmp_path):
    with pytest.raises(DataError, match="data directory does not exist"):
        load_dataset(config(tmp_path / "nope"), progress=False)
    with pytest.raises(DataError, match="no episode files match 'episode_\\*.h5'"):
        load_dataset(config(tmp_path), progress=False)


def test_cache_hit_skips_decoding_and_changed_file_is_decoded_again(tmp_path, monkeypatch):
    paths = make_folder(tmp_path / "data", episodes=2)
    cfg = config(tmp_path / "data", cache_dir=str(tmp_path / "cache"))
    first = load_dataset(cfg, progress=False)
    assert DecodeCache(cfg.cache_dir).entry(content_hash(paths[0]), (6, 8)).exists()

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded although cached")

    monkeypatch.setattr(dataset_module, "decode_images", no_decoding)
    second = load_dataset(cfg, progress=False)
    np.testing.assert_array_equal(first.images, second.images)

    # Rewrite episode 1 with other pixels: it alone must be decoded again.
    write_episode(
        paths[1],
        images=solid_frames([(1, 2, 3)] * 10),
        actions=np.zeros((10, 3), np.float32),
        instruction="go right",
    )
    decoded = []
    monkeypatch.setattr(
        dataset_module,
        "decode_images",
        lambda path, size: decoded.append(path) or real_decode(path, size),
    )
    third = load_dataset(cfg, progress=False)
    assert decoded == [str(paths[1])]
    np.testing.assert_array_equal(third.images[10:, 0, 0], [[3, 2, 1]] * 10)
    np.testing.assert_array_equal(third.images[:10], first.images[:10])


def test_other_size_is_another_cache_entry(tmp_path):
    make_folder(tmp_path, episodes=2)
    small = load_dataset(config(tmp_path, image_size=(4, 4)), progress=False)
    large = load_dataset(config(tmp_path, image_size=(8, 8)), progress=False)
    assert small.images.shape[1:3] == (4, 4) and large.images.shape[1:3] == (8, 8)


def test_process_pool_gives_the_same_arrays(tmp_path):
    make_folder(tmp_path / "data", episodes=4)
    serial = load_dataset(
        config(tmp_path / "data", workers=1, cache_dir=str(tmp_path / "c1")), progress=False
    )
    pooled = load_dataset(
        config(tmp_path / "data", workers=2, cache_dir=str(tmp_path / "c2")), progress=False
    )
    np.testing.assert_array_equal(serial.images, pooled.images)


def test_progress_prints_plain_lines_when_not_a_terminal(tmp_path):
    make_folder(tmp_path, episodes=4)
    stream = io.StringIO()
    load_dataset(config(tmp_path), stream=stream)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 4 and "\r" not in stream.getvalue()
    assert lines[-1].startswith("decoding episodes [") and "4/4 files" in lines[-1]
    assert "frames/s" in lines[-1] and "left" in lines[-1]


def test_dataset_pickles_with_numpy_buffers(tmp_path):
    make_folder(tmp_path, episodes=2)
    data = load_dataset(config(tmp_path), progress=False)
    buffers = []
    payload = pickle.dumps(data, protocol=5, buffer_callback=buffers.append)
    # The frames travel out of band (what Ray's object store shares zero-copy).
    assert sum(memoryview(b).nbytes for b in buffers) >= data.images.nbytes
    assert len(payload) < data.images.nbytes
    restored = pickle.loads(payload, buffers=buffers)
    np.testing.assert_array_equal(restored.images, data.images)


def test_unchanged_files_are_not_hashed_again(tmp_path, monkeypatch):
    import trainables.mobile_vla.decode_cache as cache_module

    make_folder(tmp_path / "data", episodes=2)
    cfg = config(tmp_path / "data", cache_dir=str(tmp_path / "cache"))
    load_dataset(cfg, progress=False)
    hashed = []
    real_hash = cache_module.content_hash
    monkeypatch.setattr(cache_module, "content_hash", lambda p: hashed.append(p) or real_hash(p))
    load_dataset(cfg, progress=False)
    assert hashed == []
    (tmp_path / "data" / "episode_20251114_100000_1box_vert_left.h5").touch()
    load_dataset(cfg, progress=False)
    assert [p.name for p in hashed] == ["episode_20251114_100000_1box_vert_left.h5"]


@pytest.mark.parametrize(
    "damage,problem",
    [
        ("truncated", "unreadable"),
        ("other_size", r"shape \(10, 4, 4, 3\), expected \(10, 6, 8, 3\)"),
        ("fewer_frames", r"shape \(5, 6, 8, 3\), expected \(10, 6, 8, 3\)"),
        ("float", "dtype float32, expected uint8"),
    ],
)
def test_damaged_cache_entry_is_decoded_again_with_a_warning(tmp_path, damage, problem):
    paths = make_folder(tmp_path / "data", episodes=2)
    cfg = config(tmp_path / "data", cache_dir=str(tmp_path / "cache"))
    first = load_dataset(cfg, progress=False)
    entry = DecodeCache(cfg.cache_dir).entry(content_hash(paths[1]), (6, 8))
    good = np.load(entry)
    if damage == "truncated":
        entry.write_bytes(entry.read_bytes()[: entry.stat().st_size // 2])
    else:
        bad = {
            "other_size": np.zeros((10, 4, 4, 3), np.uint8),
            "fewer_frames": good[:5],
            "float": good.astype(np.float32),
        }[damage]
        with open(entry, "wb") as f:
            np.save(f, bad)

    with pytest.warns(
        UserWarning, match=rf"decode cache entry {re.escape(str(entry))}: {problem}.*decoding again"
    ):
        again = load_dataset(cfg, progress=False)
    np.testing.assert_array_equal(again.images, first.images)
    np.testing.assert_array_equal(np.load(entry), good)  # the entry is whole again
