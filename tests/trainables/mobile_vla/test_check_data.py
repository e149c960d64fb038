"""The check_data CLI: summary on good folders, every bad file named, exit 2."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from tests.trainables.mobile_vla.episodes import solid_frames, write_episode
from tests.trainables.mobile_vla.test_episode_format import broken_episodes
from trainables.mobile_vla.check_data import main


def good_episode(path, instruction="go left", height=72, width=128):
    actions = np.zeros((18, 3), np.float32)
    actions[1:, 0] = 1.15
    actions[5:9, 1] = -1.15
    return write_episode(
        path,
        images=solid_frames([(30, 60, 90)] * 18, height, width),
        actions=actions,
        instruction=instruction,
    )


def test_summary_of_a_good_folder(tmp_path, capsys):
    good_episode(tmp_path / "episode_20251114_100000_1box_vert_left.h5")
    good_episode(tmp_path / "episode_20251114_100001_1box_vert_right.h5", instruction=None)
    assert main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"{tmp_path}: 2 files, 2 good, 0 bad" in out
    assert "frames: 36 (per episode 18-18), windows of 8: 22, image sizes: {'72x128': 2}" in out
    assert "linear_x   min +0.000  max +1.150" in out
    assert "neg 22.2%" in out  # 4 of 18 linear_y commands are negative
    assert "1  go left" in out and "1  (none in file)" in out


def test_every_broken_file_is_named_and_exit_is_2(tmp_path, capsys):
    good_episode(tmp_path / "episode_20251114_100000_ok.h5")
    cases = broken_episodes(tmp_path)
    assert main([str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert f"{len(cases) + 1} files, 1 good, {len(cases)} bad" in captured.out
    for path, reason in cases:
        assert f"bad: {path}: {reason}" in captured.err


def test_real_size_episodes_pass_with_decode(tmp_path, capsys):
    good_episode(tmp_path / "episode_20251114_100000_1box_hori_left.h5", height=720, width=1280)
    cache = tmp_path / "cache"
    assert (
        main([str(tmp_path), "--decode", "--cache-dir", str(cache), "--image-size", "28x28"]) == 0
    )
    assert "decoded 1 episodes (0 from cache)" in capsys.readouterr().out
    assert (
        main([str(tmp_path), "--decode", "--cache-dir", str(cache), "--image-size", "28x28"]) == 0
    )
    assert "decoded 1 episodes (1 from cache)" in capsys.readouterr().out


def test_pattern_and_empty_folder(tmp_path, capsys):
    good_episode(tmp_path / "episode_20251114_100000_a.h5")
    assert main([str(tmp_path), "--pattern", "episode_2024*.h5"]) == 2
    assert "no episode files match 'episode_2024*.h5'" in capsys.readouterr().err


def test_cli_process_exit_codes(tmp_path):
    good_episode(tmp_path / "good" / "episode_20251114_100000_a.h5")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "episode_20251114_100000_a.h5").write_bytes(b"\x00" * 100)
    cmd = [sys.executable, "-m", "trainables.mobile_vla.check_data"]
    ok = subprocess.run([*cmd, str(tmp_path / "good")], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run([*cmd, str(tmp_path / "bad")], capture_output=True, text=True)
    assert bad.returncode == 2
    assert bad.stderr.strip().endswith("episode_20251114_100000_a.h5: not an HDF5 file")
    assert "Traceback" not in bad.stderr
