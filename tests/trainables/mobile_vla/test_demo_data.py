"""The demo generator writes the collector's real format, deterministically, with
learnable actions (the expert's first strafe follows the instruction)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from trainables.mobile_vla.dataset import DataConfig, resolve_instruction
from trainables.mobile_vla.demo_data import write_demo_episodes
from trainables.mobile_vla.demo_scene import (
    ACTION_CHUNK_SIZE,
    INSTRUCTION_MAP,
    NUM_FRAMES,
    SCENARIOS,
    SPEED,
    instruction_for,
)
from trainables.mobile_vla.episode_format import FILE_NAME, decode_images, inspect_episode

REPO_ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def episodes(tmp_path_factory) -> list[Path]:
    """One of each scenario at the default (small) size."""
    return write_demo_episodes(tmp_path_factory.mktemp("demo"), len(SCENARIOS), seed=7)


def first_strafe_frame(actions: np.ndarray) -> int:
    return int(np.flatnonzero(actions[:, 1] != 0)[0])


def test_files_pass_inspect_episode(episodes):
    assert len(episodes) == len(SCENARIOS)
    for path in episodes:
        info = inspect_episode(path, min_frames=8)
        assert info.num_frames == NUM_FRAMES == 18
        assert info.image_shape == (72, 128)
        assert info.actions.shape == (NUM_FRAMES, 3)
        assert info.event_types[0] == "episode_start"
        assert set(info.event_types[1:]) <= {"start_action", "stop_action"}
        assert info.instruction == instruction_for(info.scenario)
        assert info.attrs["episode_name"] == path.stem
        assert info.attrs["num_frames"] == NUM_FRAMES
        assert info.attrs["action_chunk_size"] == ACTION_CHUNK_SIZE
        assert info.attrs["total_duration"] > 0.4 * (NUM_FRAMES - 1)
        assert info.attrs["scenario"] == info.scenario
        assert info.attrs["camera"] == "bgr8"


def test_storage_matches_collector(episodes):
    with h5py.File(episodes[0], "r") as f:
        images = f["images"]
        assert images.dtype == np.uint8
        assert images.compression == "gzip"
        assert images.chunks == (1, 72, 128, 3)
        assert f["actions"].dtype == np.float32
        assert f["action_event_types"].shape == (NUM_FRAMES,)
        assert f["action_event_types"].dtype.kind == "S"
        assert f["language_instruction"].shape == (1,)
        assert (
            f["language_instruction"][0]
            == instruction_for(inspect_episode(episodes[0]).scenario).encode()
        )


def test_names_follow_real_pattern(episodes):
    names = [p.name for p in episodes]
    assert len(set(names)) == len(names)
    stamps = []
    for name in names:
        match = FILE_NAME.match(name)
        assert match, name
        assert match.group("scenario") in SCENARIOS
        stamps.append(match.group(1) + match.group(2))
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    assert stamps[0] == "20251114100000"
    assert {FILE_NAME.match(n).group("scenario") for n in names} == set(SCENARIOS)


def test_images_are_stored_bgr(episodes):
    """Cardboard box is red > blue and the wall blue > red: stored channel 2 is red."""
    path = episodes[0]
    info = inspect_episode(path)
    frame = first_strafe_frame(info.actions)  # robot right in front of the box
    with h5py.File(path, "r") as f:
        stored = f["images"][frame].astype(int)
    red_minus_blue = stored[..., 2] - stored[..., 0]
    assert (red_minus_blue > 50).mean() > 0.05  # the box fills much of the view
    assert (red_minus_blue[:3] < 0).all()  # top rows: wall, blue > red
    rgb = decode_images(path, (72, 128))[frame].astype(int)
    np.testing.assert_array_equal(rgb, stored[..., ::-1])


def test_actions_are_nominal_commands(episodes):
    for path in episodes:
        actions = inspect_episode(path).actions
        assert set(np.unique(actions[:, :2])) <= {np.float32(-SPEED), 0.0, np.float32(SPEED)}
        assert (actions[:, 2] == 0).all()
        assert (actions[0] == 0).all()
        assert (np.abs(actions[:, 0]) * np.abs(actions[:, 1]) == 0).all()  # one key at a time


def test_first_strafe_follows_instruction(episodes):
    for path in episodes:
        info = inspect_episode(path)
        strafe = info.actions[first_strafe_frame(info.actions), 1]
        expected = SPEED if info.scenario.endswith("_left") else -SPEED
        assert strafe == np.float32(expected), info.scenario
        assert (info.actions[1 : first_strafe_frame(info.actions), 0] == np.float32(SPEED)).all()


def test_without_instruction_falls_back_to_map(tmp_path):
    paths = write_demo_episodes(tmp_path, 2, seed=1, with_instruction=False)
    cfg = DataConfig(data_dir=str(tmp_path), instruction_map=INSTRUCTION_MAP)
    for path in paths:
        with h5py.File(path, "r") as f:
            assert "language_instruction" not in f
        info = inspect_episode(path)
        assert info.instruction is None
        assert resolve_instruction(info, cfg) == instruction_for(info.scenario)


def test_instruction_for():
    assert instruction_for("1box_vert_left") == INSTRUCTION_MAP["left"]
    assert instruction_for("2box_hori_right") == INSTRUCTION_MAP["right"]
    assert instruction_for("left") == INSTRUCTION_MAP["left"]
    with pytest.raises(ValueError):
        instruction_for("1box_vert")


def test_same_seed_same_data(tmp_path):
    first = write_demo_episodes(tmp_path / "a", 3, seed=5)
    second = write_demo_episodes(tmp_path / "b", 3, seed=5)
    other = write_demo_episodes(tmp_path / "c", 3, seed=6)
    assert [p.name for p in first] == [p.name for p in second]
    for a, b, c in zip(first, second, other, strict=True):
        with h5py.File(a) as fa, h5py.File(b) as fb, h5py.File(c) as fc:
            for key in ("images", "actions", "action_event_types", "language_instruction"):
                np.testing.assert_array_equal(fa[key][()], fb[key][()])
            assert not np.array_equal(fa["images"][()], fc["images"][()])


def test_full_resolution_episode(tmp_path):
    (path,) = write_demo_episodes(tmp_path, 1, height=720, width=1280)
    info = inspect_episode(path)
    assert info.image_shape == (720, 1280)
    with h5py.File(path) as f:
        assert f["images"].chunks == (1, 720, 1280, 3)


@pytest.mark.parametrize("bad", [-1, 0])
def test_bad_arguments_raise(tmp_path, bad):
    with pytest.raises(ValueError):
        write_demo_episodes(tmp_path, bad)
    with pytest.raises(ValueError):
        write_demo_episodes(tmp_path, 1, height=8)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "trainables.mobile_vla.demo_data", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_writes_files(tmp_path):
    out = tmp_path / "out"
    result = run_cli("--out", str(out), "--episodes", "2", "--without-instruction")
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.strip().splitlines()) == 1
    assert str(out) in result.stdout
    files = sorted(out.glob("episode_*.h5"))
    assert len(files) == 2
    assert inspect_episode(files[0]).instruction is None


@pytest.mark.parametrize(
    "args",
    [
        ["--episodes", "0"],
        ["--episodes", "1", "--height", "4"],
        ["--episodes", "1", "--width", "100000"],
        ["--episodes", "two"],
        ["--episodes", "1", "--bogus"],
    ],
)
def test_cli_bad_input_exits_2(tmp_path, args):
    result = run_cli("--out", str(tmp_path / "out"), *args)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not list(tmp_path.glob("out/*.h5"))
