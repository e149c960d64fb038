"""What a sweep will run, as checked and printed before it starts: --set pins, epochs."""

from __future__ import annotations

import pytest

from tests.tuner.conftest import SMALL_GRID, run_main
from tuner.checks import BadInput
from tuner.header import print_header
from tuner.prepare import SweepOptions, prepare
from tuner.run import main
from tuner.spaces import ConfirmSpec
from tuner.storage import Storage


def test_set_pins_a_searched_key_of_the_grid(capsys, demo_dir, tmp_path):
    opts = SweepOptions(
        space="grid_robovlms", data_dir=str(demo_dir), sets={"learning_rate": "1e-4"}
    )
    prep = prepare(opts, load_data=False)
    assert prep.space.num_trials() == 12 and len(prep.candidates) == 12
    assert prep.searched == ["weight_decay", "batch_size", "warmup_ratio"]
    assert {c["learning_rate"] for c in prep.candidates} == {"1e-4"}

    print_header(prep, Storage(str(tmp_path / "results"), "x"), "sqlite:///m.db")
    out = capsys.readouterr().out
    assert "12 trials, grid" in out
    assert "learning_rate=1e-4 (pinned by --set; the space searched 3 values)" in out


def test_search_option_sets_the_trial_count(capsys, demo_dir, tmp_path):
    # --search random on a grid space: the header said 36 trials while Tune ran 5.
    opts = SweepOptions(
        space="grid_robovlms", data_dir=str(demo_dir), search="random", num_samples=5
    )
    prep = prepare(opts, load_data=False)
    assert prep.space.search == "random" and prep.space.num_trials() == 5
    print_header(prep, Storage(str(tmp_path / "results"), "x"), "sqlite:///m.db")
    assert "5 trials, random" in capsys.readouterr().out


def test_pinned_key_leaves_the_trial_names(capsys, sweep_args, write_space, tmp_path):
    args = sweep_args(write_space(SMALL_GRID), "--set", "learning_rate=1e-4", "--dry-run")
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "learning_rate=1e-4 (pinned by --set; the space searched 2 values)" in out
    assert "2 trials:" in out
    trials = [line.split()[0] for line in out.splitlines() if "steps/epoch" in line]
    assert trials == ["wd=0", "wd=0.1"]


def test_pinning_every_sampled_key_is_refused(capsys, sweep_args, write_space):
    space = write_space(
        "trainable: mobile_vla\nmetric: val_loss\nsearch: random\n"
        "params: {learning_rate: {loguniform: [1.0e-5, 1.0e-3]}}\n"
    )
    code, err = run_main(capsys, sweep_args(space, "--set", "learning_rate=1e-4"))
    assert (
        code == 2 and err == f"error: --set pins every key {space} searches: nothing left to sample"
    )


NO_EPOCHS = SMALL_GRID.replace("  max_epochs: 2\n", "")


def test_space_without_max_epochs_uses_the_trainable_default(capsys, sweep_args, write_space):
    assert main(sweep_args(write_space(NO_EPOCHS), "--dry-run")) == 0
    out = capsys.readouterr().out
    assert "asha (max_t 5, grace 1, reduction 2)" in out  # TrainConfig.max_epochs
    assert "  epochs     5 per trial" in out
    assert "the space sets no max_epochs: 5 epochs per trial, the default of 'mobile_vla'" in out


@pytest.mark.parametrize("trainable,epochs", [("mobile_vla", 5), ("robot_code", 4)])
def test_default_epochs_are_each_trainables_own(write_space, tmp_path, trainable, epochs):
    space = write_space(
        f"trainable: {trainable}\nmetric: val_loss\nparams: {{learning_rate: [1.0e-4]}}\n"
    )
    data_key = {"mobile_vla": "data_dir", "robot_code": "data_path"}[trainable]
    opts = SweepOptions(space=str(space), sets={data_key: str(tmp_path / "data")})
    prep = prepare(opts, load_data=False)
    assert prep.base["max_epochs"] == epochs and prep.max_t == epochs


def test_confirmation_comes_from_the_space_and_the_options(
    capsys, sweep_args, write_space, demo_dir
):
    """The shipped RoboVLMs spaces confirm 3 x 3; other spaces nothing unless asked;
    --confirm 0 turns it off; --seeds alone is refused."""

    def confirm(space, **options):
        opts = SweepOptions(space=str(space), data_dir=str(demo_dir), **options)
        spec = prepare(opts, load_data=False).confirm
        return spec.top, spec.seeds

    assert confirm("grid_robovlms") == (3, 3) and confirm("paper_robovlms") == (3, 3)
    assert confirm("grid_robovlms", confirm=0)[0] == 0
    small = write_space(SMALL_GRID)
    assert confirm(small)[0] == 0
    assert confirm(small, confirm=2, seeds=2) == (2, 2)
    with pytest.raises(BadInput, match="--seeds 4: nothing to confirm"):
        confirm(small, seeds=4)
    args = sweep_args(small, "--dry-run")
    assert main([*args, "--confirm", "0"]) == 0
    assert "confirm    off" in capsys.readouterr().out
    assert main([*args, "--seeds", "1"]) == 2
    assert "error: --seeds must be >= 2" in capsys.readouterr().err
    # The practical threshold: 1% by default, the space's `confirm: {min_effect}`, the option.
    opts = SweepOptions(space="grid_robovlms", data_dir=str(demo_dir))
    assert prepare(opts, load_data=False).confirm.min_effect == 0.01
    tight = write_space(SMALL_GRID + "confirm: {top: 2, min_effect: 0.002}\n", "tight.yaml")
    assert prepare(SweepOptions(space=str(tight), data_dir=str(demo_dir)), False).confirm == (
        ConfirmSpec(top=2, seeds=3, min_effect=0.002)
    )
    opts = SweepOptions(space=str(tight), data_dir=str(demo_dir), min_effect=0.05)
    assert prepare(opts, load_data=False).confirm.min_effect == 0.05
    assert main([*args, "--confirm", "5"]) == 2  # SMALL_GRID: 4 trials
    assert capsys.readouterr().err == "error: --confirm 5: the sweep has only 4 trials\n"
    few = write_space(SMALL_GRID + "confirm: {top: 3}\n", "few.yaml")
    code = main([*sweep_args(few, "--dry-run"), "--set", "weight_decay=0"])  # 2 trials left
    assert code == 2
    assert capsys.readouterr().err == f"error: {few}: confirm.top 3: the sweep has only 2 trials\n"
    assert main([*args, "--confirm", "2", "--min-effect", "1.5"]) == 2
    assert capsys.readouterr().err == (
        "error: --min-effect: expected a fraction of the metric in [0, 1), got 1.5\n"
    )
