"""Space files: the shipped ones load; every kind of mistake names file and key."""

from __future__ import annotations

import pytest

from trainables.task import get_task
from tuner.spaces import SpaceError, available, check_keys, load_space, main


def test_shipped_spaces_load_and_use_real_keys():
    names = set(available())
    assert {"grid_robovlms", "paper_robovlms", "lora_tpe"} <= names
    grid = load_space("grid_robovlms")
    assert grid.num_trials() == 36 and len(grid.grid()) == 36
    assert grid.params["learning_rate"].args == [1e-4, 2e-5, 1e-5]
    assert grid.grid()[0] == {
        "learning_rate": 1e-4,
        "weight_decay": 0.0,
        "batch_size": 128,
        "warmup_ratio": 0.25,
    }
    paper = load_space("paper_robovlms")
    assert paper.num_trials() == 6 and paper.fixed["batch_size"] == 128
    assert paper.fixed["warmup_ratio"] == 0.25
    tpe = load_space("lora_tpe")
    assert tpe.search == "optuna" and tpe.params["learning_rate"].kind == "loguniform"
    for name in names:
        space = load_space(name)
        check_keys(space, get_task(space.trainable).keys)


@pytest.mark.parametrize(
    "text,message",
    [
        (
            "trainable: mobile_vla\nmetric: val_loss\nparams: {learning_rate: [1]}\nfoo: 1\n",
            "unknown key 'foo'",
        ),
        ("trainable: mobile_vla\nparams: {learning_rate: [1]}\n", "missing key 'metric'"),
        (
            "trainable: mobile_vla\nmetric: m\nsearch: bayes\nparams: {a: [1]}\n",
            "search: expected one of",
        ),
        (
            "trainable: mobile_vla\nmetric: m\nmode: best\nparams: {a: [1]}\n",
            "mode: expected min or max",
        ),
        (
            "trainable: mobile_vla\nmetric: m\nparams: {a: {loguniform: [1e-3, 1e-1]}}\n",
            "params.a: a grid search takes lists of values, not 'loguniform'",
        ),
        (
            "trainable: mobile_vla\nmetric: m\nsearch: random\nparams: {a: {loguniform: [0, 1]}}\n",
            "params.a.loguniform: bounds must be > 0",
        ),
        (
            "trainable: mobile_vla\nmetric: m\nsearch: random\nparams: {a: {normal: [0, 1]}}\n",
            "params.a: unknown distribution 'normal'",
        ),
        ("trainable: mobile_vla\nmetric: m\nparams: {a: []}\n", "params.a: empty list of values"),
        (
            "trainable: mobile_vla\nmetric: m\nparams: {a: [1]}\nscheduler: {grace: 1}\n",
            "scheduler.grace: unknown key",
        ),
        (
            "trainable: x\nmetric: m\nparams: {a: [1]}\nscheduler: {reduction_factor: 1}\n",
            "scheduler.reduction_factor: must be > 1",
        ),
        (
            "trainable: mobile_vla\nmetric: m\nparams: {a: [1]}\nfixed: {a: 2}\n",
            "fixed.a: also searched",
        ),
        (
            "trainable: mobile_vla\nmetric: m\nparams: {a: [1]}\nconfirm: {top: 2, seeds: 1}\n",
            "confirm.seeds: expected an integer >= 2, got 1",
        ),
        (
            "trainable: mobile_vla\nmetric: m\nparams: {a: [1]}\nconfirm: {best: 2}\n",
            "confirm.best: unknown key",
        ),
        ("trainable: mobile_vla\nmetric: m\nparams: {a: [1]}\nconfirm: 3\n", "confirm: expected"),
        (
            "trainable: mobile_vla\nmetric: m\nparams: {a: [1]}\nconfirm: {min_effect: 5}\n",
            "confirm.min_effect: expected a fraction of the metric in [0, 1), got 5",
        ),
        ("trainable: [unclosed\n", "not valid YAML (line 2)"),
        ("- just\n- a list\n", "expected a mapping at the top level"),
    ],
)
def test_bad_space_files_name_file_and_key(write_space, text, message):
    path = write_space(text)
    with pytest.raises(SpaceError) as info:
        load_space(str(path))
    assert str(info.value).startswith(str(path)) and message in str(info.value)


def test_unknown_name_lists_known_spaces():
    with pytest.raises(SpaceError, match="unknown space 'nope' \\(known: .*grid_robovlms"):
        load_space("nope")


def test_keys_must_belong_to_the_trainable(write_space):
    space = load_space(str(write_space("trainable: mobile_vla\nmetric: m\nparams: {lr: [1]}\n")))
    with pytest.raises(SpaceError, match="params.lr: not a config key of 'mobile_vla'"):
        check_keys(space, get_task("mobile_vla").keys)


def test_cli_lists_and_shows(capsys):
    assert main([]) == 0
    assert "grid_robovlms        36 trials" in capsys.readouterr().out
    assert main(["paper_robovlms"]) == 0
    out = capsys.readouterr().out
    assert "grid, 6 trials" in out and "fixed      batch_size: 128" in out
    assert main(["missing"]) == 2
