"""The confirmation phase end to end: real Ray, real MLflow, the demo episodes."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import signal
import sys

import pytest

from tests.services import by_phase, cli, kill_group, start_group, sweep_runs, wait_for
from tests.tuner.conftest import TWO_RATES
from trainables.tune_function import HOLD_FILE_ENV
from tuner.confirm import CONFIRM_DIR

CONFIRM = ["--scheduler", "fifo", "--confirm", "2", "--seeds", "2"]


# The confirmation of an ASHA sweep: tests/tuner/test_sweep.py's end-to-end sweep.


@pytest.mark.sweep
def test_an_interrupted_confirmation_resumes_to_a_verdict_running_nothing_twice(
    sweep_args, write_space, tmp_path
):
    """The driver is interrupted (SIGINT: Tune then returns from fit()) while a
    confirmation run holds after its first epoch; --resume finishes the confirmation, and
    its verdict, table and best are those of a sweep that was never interrupted. (A
    driver killed outright is resumed in tests/tuner/test_sweep.py.) A search of two
    trials: the top 2 are all of them."""
    space = write_space(TWO_RATES)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    command = [sys.executable, "-m", "tuner.run", *sweep_args(space, "--name", "cut", *CONFIRM)]
    hold = tmp_path / "hold"
    hold.write_text(f"0 {CONFIRM_DIR}")  # the search runs; confirmation runs hold after epoch 1

    def a_confirmation_run_holds() -> bool:
        client, _, children = sweep_runs(uri)
        return any(
            client.get_metric_history(c.info.run_id, "val_loss") for c in by_phase(children)[1]
        )

    log = tmp_path / "driver.log"
    driver = start_group(command, env={**os.environ, HOLD_FILE_ENV: str(hold)}, log=log)
    try:
        wait_for(driver, a_confirmation_run_holds, "a confirmation run after its first epoch")
        driver.send_signal(signal.SIGINT)
        # An interrupted confirmation names no winner: the sweep is unfinished.
        assert driver.wait(timeout=300) == 130, log.read_text()[-3000:]
        _, parents, _ = sweep_runs(uri)
        assert parents[0].info.status == "KILLED"
        assert "vla_tune.verdict" not in parents[0].data.tags
    finally:
        with contextlib.suppress(ProcessLookupError):  # the group may be gone
            kill_group(driver)
    assert (
        "confirm    top 2 x 2 seeds (2 more runs after the search; a tie in practice below 1%)"
        in log.read_text()
    )

    resumed = cli("tuner.run", "--resume", "--name", "cut", "--storage-path", tmp_path / "results")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "confirmed (val_loss" in resumed.stdout and "\nverdict: " in resumed.stdout
    client, parents, children = sweep_runs(uri)
    search, confirm = by_phase(children)
    assert len(parents) == 1 and len(search) == 2 and len(confirm) == 2  # K x (N - 1), none twice
    assert {c.info.status for c in children} == {"FINISHED"}
    for child in confirm:
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "val_loss")]
        assert steps == [1, 2], (child.info.run_name, steps)
    assert {c.data.params["seed"] for c in confirm} == {"1"}  # the search ran seed 0
    confirmed = {c.data.params["confirms"] for c in confirm}
    assert len(confirmed) == 2 and confirmed <= {c.info.run_name for c in search}
    # Each confirmation run keeps one checkpoint (of 2 epochs) once the phase is over.
    assert len(list((tmp_path / "results" / "cut" / "confirm").glob("*/checkpoint_*"))) == 2

    parent = parents[0]
    line = parent.data.tags["vla_tune.verdict"]
    assert line.startswith("best lr=") and "(2 seeds)" in line
    assert f"verdict: {line}" in resumed.stdout
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"confirm.csv", "confirm.png"} <= artifacts
    path = client.download_artifacts(parent.info.run_id, "confirm.csv", str(tmp_path))
    table = list(csv.DictReader(io.StringIO(open(path).read())))
    ranks_seeds = [(r["rank"], r["seed"]) for r in table]
    assert ranks_seeds == [("1", "0"), ("1", "1"), ("2", "0"), ("2", "1")]
    best = json.loads((tmp_path / "results" / "cut" / "best.json").read_text())
    assert best["confirmed"]["verdict"] == line and best["confirmed"]["seeds"] == [0, 1]
    assert best["confirmed"]["min_effect"] == 0.01
    assert best["trial"] == table[0]["config"]  # the confirmed best, not just the search's
