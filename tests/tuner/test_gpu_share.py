"""A fractional --gpus-per-trial becomes each trial's share of the card's memory."""

from __future__ import annotations

import json

import pytest

from tests.tuner.conftest import SMALL_GRID
from trainables.config import ConfigError
from trainables.mobile_vla.trial_config import parse_config
from tuner.run import main


def planned_trials(capsys, args) -> list[dict]:
    code = main([*args, "--dry-run", "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out)["trials"]


def test_a_fractional_gpu_per_trial_sets_every_trials_memory_share(capsys, sweep_args, write_space):
    space = write_space(SMALL_GRID)
    trials = planned_trials(capsys, sweep_args(space, "--gpus-per-trial", "0.5"))
    assert len(trials) == 4 and {t["gpu_share"] for t in trials} == {0.5}
    assert parse_config(trials[0]).run.gpu_share == 0.5  # what the trial applies at start
    for whole in ("1", "2"):  # a whole card (or more) per trial: no limit
        trials = planned_trials(capsys, sweep_args(space, "--gpus-per-trial", whole))
        assert all("gpu_share" not in t for t in trials)
    pinned = planned_trials(
        capsys, sweep_args(space, "--gpus-per-trial", "0.5", "--set", "gpu_share=0.4")
    )
    assert {t["gpu_share"] for t in pinned} == {0.4}  # --set wins


def test_a_share_outside_zero_to_one_is_refused_by_name(capsys, sweep_args, write_space):
    with pytest.raises(ConfigError, match=r"^gpu_share: must be in \(0, 1\], got 1.5$"):
        parse_config({"data_dir": "demo", "gpu_share": 1.5})
    code = main([*sweep_args(write_space(SMALL_GRID), "--set", "gpu_share=0"), "--dry-run"])
    assert code == 2
    assert capsys.readouterr().err.strip().endswith("gpu_share: must be in (0, 1], got 0.0")
