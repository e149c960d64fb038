"""The sweep forecast: ASHA's trial-epoch arithmetic against Ray's own bracket, slots,
the schedule, the learned overhead, and the `forecast` field of `--dry-run --json`."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
from ray.tune.schedulers import TrialScheduler
from ray.tune.schedulers.async_hyperband import _Bracket

from tests.services import cli
from tests.tuner.conftest import SMALL_GRID
from trainables.calibrate import Calibration
from tuner import forecast
from tuner.eta import Eta
from tuner.overhead import Overhead, measure_overhead, read_overhead, save_overhead
from tuner.spaces import ConfirmSpec


def continuing(n: int, rf: float, rng: np.random.Generator) -> int:
    """Trials Ray's ASHA bracket lets past its first rung, results in random order."""
    bracket = _Bracket(1, int(rf), rf, 0)  # rungs at 1 and rf
    values = rng.random(n)
    return sum(
        bracket.on_result(SimpleNamespace(trial_id=str(i)), 1, v) == TrialScheduler.CONTINUE
        for i, v in enumerate(values)
    )


@pytest.mark.parametrize(("n", "rf"), [(12, 3), (36, 3), (10, 2)])
def test_expected_survivors_match_rays_bracket(n, rf):
    rng = np.random.default_rng(0)
    simulated = np.mean([continuing(n, rf, rng) for _ in range(2000)])
    assert forecast.survivors(n, rf) == pytest.approx(simulated, abs=0.15)


def test_asha_stop_epochs_add_up():
    assert forecast.asha_rungs(9, 1, 3) == [1, 3]
    assert forecast.asha_rungs(6, 1, 3) == [1, 3]
    assert forecast.asha_rungs(16, 2, 2) == [2, 4, 8]
    stops = forecast.stop_epochs(36, "asha", 9, 1, 3)
    assert [e for e, _ in stops] == [1, 3, 9]
    assert sum(n for _, n in stops) == pytest.approx(36)
    after_first = forecast.survivors(36, 3)
    assert stops[0][1] == pytest.approx(36 - after_first)
    assert stops[2][1] == pytest.approx(forecast.survivors(after_first, 3))
    assert forecast.stop_epochs(1, "asha", 9, 1, 3)[-1] == (9, 1.0)  # the first goes on
    assert forecast.stop_epochs(6, "fifo", 9, 1, 3) == [(9, 6.0)]


def test_slots_and_makespan():
    assert forecast.slots([(2, 0)], 1, 0) == 2
    assert forecast.slots([(16, 1), (16, 2)], 4, 0.5) == 6
    assert forecast.slots([(16, 1)], 4, 2) == 1  # never below one
    assert forecast.makespan([(10.0, 4)], 1, 10.0) == 40.0
    assert forecast.makespan([(10.0, 4)], 2, 10.0) == pytest.approx(20.0 + 2.5)
    assert forecast.makespan([(8.0, 2)], 2, 10.0) == 10.0  # each its own slot: the longest
    assert forecast.duration(4900) == "1 h 22 min" and forecast.duration(42) == "42 s"


def calibration(step_s: float) -> Calibration:
    frames = {"micro_batch_frames": 64}
    return Calibration("cpu (1 threads)", "fp32", frames, 10, step_s, 2.0, 3.0, 1.0, 1.0)


def prep_like(num: int, confirm_top: int = 0, budget: float | None = None):
    space = SimpleNamespace(
        scheduler=SimpleNamespace(grace_period=1, reduction_factor=3),
        num_trials=lambda: num,
    )
    return SimpleNamespace(
        space=space,
        max_t=9,
        scheduler="fifo",
        confirm=ConfirmSpec(top=confirm_top, seeds=3),
        options=SimpleNamespace(time_budget=budget),
    )


def test_plan_forecast_counts_trials_confirmation_and_budget():
    cal = calibration(0.5)  # epoch: 10 x 0.5 + 1 + 1 = 7 s; a trial: 3 + 9 x 7 = 66 s
    fc = forecast.plan_forecast(prep_like(4, confirm_top=1, budget=60), [cal] * 4, 1, 0, 1, False)
    assert fc.trial_epochs == 36 and fc.full_epochs == 36 and fc.confirm_runs == 2
    assert fc.search_s == pytest.approx(2.0 + 4 * 66)  # one import, four trials in turn
    assert fc.confirm_s == pytest.approx(2.0 + 2 * 66)  # its own workers import again
    assert fc.device_kind == "CPU" and fc.device_hours == pytest.approx(6 * 66 / 3600)
    assert fc.exceeds_budget() and "exceeds --time-budget 1 min" in fc.line()
    doc = fc.document()
    assert doc["seconds"] == pytest.approx(2 * 2 + 6 * 66) and doc["exceeds_budget"] is True

    # A budget the search fits but the confirmation after it does not: said, not refused.
    fits = forecast.plan_forecast(
        prep_like(4, confirm_top=1, budget=300), [cal] * 4, 1, 0, 1, False
    )
    assert not fits.exceeds_budget() and fits.seconds > 300
    assert (
        "the search (~4 min) fits --time-budget 5 min; the confirmation after it (~2 min) is "
        in (fits.line())
    )

    overhead = Overhead(speed=2.0, start_s=4.0, trial_s=5.0, phase_s=3.0, sweep="before")
    slower = forecast.plan_forecast(prep_like(4), [cal] * 4, 1, 0, 1, False, overhead)
    assert slower.search_s == pytest.approx(3.0 + 4 * (4 + 9 * 7 * 2 + 5))  # measured start
    assert (
        "epochs x2.00, 3.0 s to start the workers, 4.0 s to start a trial, +5.0 s between "
        "trials, as measured in before"
    ) in slower.line()


def test_overhead_is_measured_from_a_finished_search(tmp_path):
    cal = calibration(0.5)  # an epoch: 7 s
    fc = forecast.plan_forecast(prep_like(4), [cal] * 4, 2, 0, 1, False)
    config = {"learning_rate": 1e-4, "batch_size": 32}
    from trainables.calibrate import cost_key

    fc.by_plan = {repr(cost_key({**config, "torch_threads": 0})): cal}

    # Four trials of 3 epochs on 2 slots; the machine shared, each epoch after the first
    # took 14 s (x2). A trial in a worker that ran one before took 20 s for its first
    # epoch: 20 - 14 = 6 s to start. The first trial on each slot took 25 s: 5 s of
    # imports in its fresh worker, and its first result came 28 s after the search
    # started: 28 - 20 = 8 s to start the workers. Those two ended 56 s in; 10 s later the
    # next two began (first result at 86 s); the search took 124 s: (124 - 8) x 2 = 232 s
    # of slot time, 192 s of it inside the trials once the imports are taken out, 10 s
    # per trial outside them.
    def trial(lr: float, first_s: float, first_at: float):
        flat = {**config, "torch_threads": 1, "learning_rate": lr}
        return (flat, 3, first_s, first_s + 28, first_at)

    later, fresh = (20.0, 86.0), (25.0, 28.0)  # listed out of order: sorted by their start
    trials = [trial(3, *later), trial(1, *fresh), trial(4, *later), trial(2, *fresh)]
    overhead = measure_overhead(fc, trials, 124.0, "sweep-a")
    expected = Overhead(speed=2.0, start_s=6.0, trial_s=10.0, phase_s=8.0, sweep="sweep-a")
    assert overhead == expected
    # Two trials on two slots: neither ran in a worker that had run one before, so the
    # start of a trial is its calibrated set-up (3 s), and the rest of their first epochs
    # (28 - 3 - 14 = 11 s) is the workers' start.
    pair = forecast.plan_forecast(prep_like(2), [cal] * 2, 2, 0, 1, False)
    pair.by_plan = fc.by_plan
    first_two = measure_overhead(pair, [trial(1, *fresh), trial(2, *fresh)], 64.0, "sweep-b")
    assert (first_two.start_s, first_two.phase_s) == (3.0, 11.0)
    assert first_two.trial_s == pytest.approx(((64 - 11) * 2 - (2 * 53 - 2 * 8)) / 2)
    fc.task = "mobile_vla"
    save_overhead(fc, overhead, root=tmp_path)
    assert read_overhead("mobile_vla", cal.device, 2, root=tmp_path) == overhead
    assert read_overhead("mobile_vla", cal.device, 3, root=tmp_path) is None  # concurrency
    assert read_overhead("robot_code", cal.device, 2, root=tmp_path) is None  # another task


def test_dry_run_json_holds_the_forecast_measured_once(sweep_args, write_space, tmp_path):
    space = write_space(SMALL_GRID)
    args = sweep_args(space, "--dry-run", "--json", "--cpus-per-trial", "1")
    first = cli("tuner.run", *args)
    assert first.returncode == 0, first.stderr[-3000:]
    fc = json.loads(first.stdout)["forecast"]
    stops = forecast.stop_epochs(4, "asha", 2, 1, 2)
    assert fc["trial_epochs"] == pytest.approx(sum(e * n for e, n in stops), abs=0.05)
    assert fc["full_epochs"] == 8 and fc["confirm_runs"] == 0
    assert fc["seconds"] > 0 and fc["budget_s"] is None and fc["overhead"] is None
    # Mobile VLA's frames cap (32 windows of 8 frames), not a window micro-batch it never uses
    assert "s per step at micro_batch_frames=256 on cpu (1 threads)" in fc["calibrated"]
    entries = list((tmp_path / "cache" / "vla-tune" / "calibration").glob("*.json"))
    assert len(entries) == 1  # one batch plan: learning rate and weight decay cost nothing

    # Half the forecast (the same again: the calibration is cached), whatever this machine's speed.
    budget = fc["seconds"] / 2
    again = cli("tuner.run", *sweep_args(space, "--dry-run", "--time-budget", f"{budget:.3f}"))
    assert again.returncode == 0, again.stderr[-3000:]
    line = next(x for x in again.stdout.splitlines() if x.startswith("  forecast"))
    assert "(calibrated earlier: " in line
    assert "the forecast exceeds --time-budget" in again.stdout
    assert len(list((tmp_path / "cache" / "vla-tune" / "calibration").glob("*.json"))) == 1


def test_a_bad_time_budget_is_one_line(sweep_args, write_space):
    run = cli("tuner.run", *sweep_args(write_space(SMALL_GRID), "--time-budget", "2 weeks"))
    assert run.returncode == 2
    assert "--time-budget: expected a duration like 2h" in run.stderr


def test_live_eta_follows_measured_epochs_and_ashas_decisions():
    prep = prep_like(36)
    prep.scheduler = "asha"
    eta = Eta.for_phase(prep, concurrency=2)
    expected = sum(e * n for e, n in forecast.stop_epochs(36, "asha", 9, 1, 3))
    assert 36 * eta.epochs_left(0, eta.pass_rate) == pytest.approx(expected)
    assert eta.epochs_left(9, eta.pass_rate) == 0
    assert eta.epochs_left(3, eta.pass_rate) == 6  # it passed rung 3: on to the end

    # 6 trials stopped at epoch 1, 3 went on (one running at 3, two at 2): 1/3 pass.
    trials = [("TERMINATED", 1, 2.0)] * 6 + [("RUNNING", 3, 6.0), ("RUNNING", 2, 4.0)] * 1
    trials += [("RUNNING", 2, 4.0)]
    rates = eta.observed_rates([(s, e) for s, e, _ in trials])
    assert rates[1] == pytest.approx(3 / 9) and rates[3] == eta.pass_rate[3]  # undecided
    assert eta.left([]) is None
    per_epoch = (6 * 2.0 + 6.0 + 4.0 + 4.0) / (6 + 3 + 2 + 2)
    live = eta.epochs_left(3, rates) + 2 * eta.epochs_left(2, rates)
    unseen = (36 - 9) * eta.epochs_left(0, rates)
    assert eta.left(trials) == pytest.approx((live + unseen) * per_epoch / 2)
