"""Packed sweeps (`--pack K`): each configuration stays its own Tune trial, trained in a
pack on its node. Real Ray, real MLflow (SQLite), real packs of the tiny model."""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import time

import pytest

from tests.services import cli, kill_group, start_group, sweep_runs, wait_for
from tests.tuner.conftest import SMALL_GRID, run_main
from tests.tuner.test_sweep import ROBOT_CODE
from trainables.tune_function import HOLD_FILE_ENV
from tuner.confirm import CONFIRM_DIR
from tuner.run import main

PACK_LABEL = re.compile(r"127\.0\.0\.1/pack-\d+")
# val_loss is a float64 mean of fp32 per-window losses; packed and alone, the same fp32
# operations in another grouping of rows (a few ulps of fp32 per matmul, ~1e-7 relative,
# over two epochs of steps): the 1e-4 relative leaves that room many times over.
RELATIVE = 1e-4


def val_losses(client, run_id: str) -> dict[int, float]:
    history = client.get_metric_history(run_id, "val_loss")
    steps = [m.step for m in history]
    assert len(steps) == len(set(steps)), steps  # a resumed sweep logs no step twice
    return {m.step: m.value for m in history}


def alone(config: dict, epochs: int, data) -> dict[int, float]:
    """val_loss per epoch of `config` trained alone, for its first `epochs` epochs: what
    the unpacked trial function runs in each trial of an unpacked FIFO sweep (the same
    flat config, the same shared data with its precomputed image features)."""
    from trainables.task import get_task

    losses: dict[int, float] = {}

    class Enough(Exception):
        pass

    def report(metrics, checkpoint_dir):
        losses[int(metrics["epoch"])] = metrics["val_loss"]
        if len(losses) == epochs:
            raise Enough

    with contextlib.suppress(Enough):
        get_task("mobile_vla").train(config, report, data)
    return losses


def shared_data(config: dict):
    """The data as the sweep's driver shares it with every trial (tuner/measure.py)."""
    from trainables.task import get_task

    task = get_task("mobile_vla")
    data, _ = task.precompute(config, task.load_data(config), "cpu")
    return data


@pytest.mark.sweep
def test_a_packed_sweep_killed_and_resumed_trains_what_each_trial_trains_alone(
    sweep_args, write_space, tmp_path
):
    """--pack 3 with two trials at a time: they share a pack, and a pending trial takes
    the place a finished one left. The last trial of the grid (a low rate) starts only
    after two others ended, one of them with a high rate and a better rung-1 result: ASHA
    stops it whatever the order of results. The best configuration is confirmed with a
    second seed; that run holds after its first epoch, the driver is killed (-9) and the
    sweep resumed: the run goes on in a new pack. Every run's val_loss at every epoch is
    what its configuration trains alone."""
    experiment = tmp_path / "results" / "packed"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    hold = tmp_path / "hold"
    hold.write_text(f"0 {CONFIRM_DIR}")  # the search runs; the confirmation holds after epoch 1
    args = sweep_args(
        write_space(SMALL_GRID), "--name", "packed", "--pack", "3", "--max-concurrent", "2",
        "--confirm", "1", "--seeds", "2",
    )  # fmt: skip
    log = tmp_path / "driver.log"
    driver = start_group(
        [sys.executable, "-m", "tuner.run", *args],
        env={**os.environ, HOLD_FILE_ENV: str(hold)},
        log=log,
    )
    try:
        wait_for(driver, (tmp_path / "hold.waiting").exists, "a confirmation run holding")
    finally:
        kill_group(driver)
    assert "  packing    up to 3 trials per pack on one shared base" in log.read_text()

    resumed = cli("tuner.run", "--resume", "--name", "packed", "--storage-path", experiment.parent)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "packing    up to 3 trials per pack" in resumed.stdout  # the saved --pack
    client, parents, children = sweep_runs(uri)
    assert len(parents) == 1 and len(children) == 5  # 4 searched + 1 confirmed, none twice
    assert {c.info.status for c in children} == {"FINISHED"}
    stops = {c.info.run_name: c.data.tags["vla_tune.stopped"] for c in children}
    assert stops["lr=1e-05,wd=0.1"] == "asha at epoch 1", stops
    data = None
    for child in children:
        assert PACK_LABEL.fullmatch(child.data.tags["vla_tune.pack"]), child.data.tags
        assert 1 <= child.data.metrics["pack_size"] <= 2
        losses = val_losses(client, child.info.run_id)
        epochs = max(losses)
        assert sorted(losses) == list(range(1, epochs + 1))
        trial = child.data.tags["vla_tune.trial_id"]
        config = json.loads(next(experiment.rglob(f"*_{trial}/params.json")).read_text())
        data = data or shared_data(config)
        assert losses == pytest.approx(alone(config, epochs, data), rel=RELATIVE), config


def test_dry_run_shows_the_packs_and_a_full_fine_tune_runs_unpacked(
    capsys, sweep_args, write_space
):
    from tuner import packs
    from tuner.forecast import local_nodes

    space = write_space(SMALL_GRID)
    assert main([*sweep_args(space, "--pack", "3", "--cpus-per-trial", "1"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    cpus = int(local_nodes()[0]["Resources"]["CPU"])  # trials: 3 per CPU, one pack per CPU
    line = next(x for x in out.splitlines() if x.startswith("  packing "))
    assert line == (
        f"  packing    up to 3 trials per pack on one shared base ({cpus} packs, {3 * cpus} "
        "trials at once here); a pack holds 1 CPU and trains with 1 torch thread(s); each "
        "of its trials asks Tune for 0.3333 CPU"
    )
    assert f"{min(4, 3 * cpus)} trials at a time in " in out  # the forecast counts packs

    args = sweep_args(space, "--pack", "3", "--cpus-per-trial", "1", "--dry-run", "--json")
    assert main(args) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["packing"] == {
        "asked": 3, "trials_per_pack": 3, "unpacked_because": None, "packs_at_once": cpus,
        "trials_at_once": 3 * cpus, "pack_resources": {"CPU": 1, "GPU": 0},
        "trial_resources": {"CPU": 0.3333, "GPU": 0}, "torch_threads_per_pack": 1,
        "pack_factor": packs.PACK_FACTOR,
    }  # fmt: skip
    assert doc["forecast"]["pack"] == 3

    full = sweep_args(space, "--pack", "3", "--set", "lora_enable=false", "--dry-run", "--json")
    assert main(full) == 0
    doc = json.loads(capsys.readouterr().out)
    reason = "a full fine-tune (lora_enable: false) trains the base itself: nothing to share"
    assert doc["packing"]["trials_per_pack"] == 1
    assert doc["packing"]["unpacked_because"] == reason
    assert doc["forecast"]["pack"] == 1

    windows = write_space(SMALL_GRID.replace("  weight_decay: [0.0, 0.1]", "  tiny_layers: [1, 2]"))
    assert main(sweep_args(windows, "--pack", "3", "--dry-run", "--json")) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["packing"]["trials_per_pack"] == 1
    assert doc["packing"]["unpacked_because"] == (
        "the space searches tiny_layers, which the shared base follows: each value needs a "
        "base of its own"
    )


def test_bad_pack_values_are_one_line(capsys, sweep_args, write_space, tmp_path):
    code, err = run_main(capsys, sweep_args(write_space(SMALL_GRID), "--pack", "0"))
    assert (code, err) == (2, "error: --pack must be >= 1, got 0")
    code_space = str(write_space(ROBOT_CODE, "code.yaml"))
    args = sweep_args(code_space, "--pack", "2")
    del args[args.index("--data-dir") : args.index("--data-dir") + 2]  # its demo records
    code, err = run_main(capsys, args)
    assert code == 2 and err == (
        "error: --pack 2: task robot_code does not pack (only mobile_vla trials share a base)"
    )


def test_a_lost_member_frees_its_place_and_a_leaving_one_at_once(monkeypatch, demo_dir, demo_data):
    """The pack actor's logic, in this process: a member whose client stopped renewing (its
    process died) loses its place; the next trial takes it and trains."""
    from trainables.packing import actor

    monkeypatch.setattr(actor, "LEASE_S", 0.5)
    host = actor.PackHost(1, demo_data, threads=1)
    config = {"data_dir": str(demo_dir), "batch_size": 32, "max_epochs": 1, "torch_threads": 1}
    assert host.reserve("a") and host.join("a", config, None) is None
    assert not host.reserve("b")  # full
    deadline = time.monotonic() + 30
    while not host.reserve("b"):  # "a" never renews
        assert time.monotonic() < deadline, "the lost member kept its place"
        time.sleep(0.1)
    assert "not in the pack" in host.epoch("a")["error"]
    assert host.join("b", config, None) is None
    result = host.epoch("b")
    assert result["error"] is None and result["finished"] and result["metrics"]["val_loss"] > 0
    host.leave("b")
    assert host.reserve("c")  # a place given up is free at once
