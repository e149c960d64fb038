"""How long a sweep will take, before it starts: measured step times (trainables/calibrate.py)
times the trial-epochs ASHA is expected to run, spread over the trials that fit at once.

A calibration runs alone; inside a sweep, trials share the machine with each other, with
Ray and with the MLflow logging, and Tune adds its own cost per trial: both are measured by
the last search on the same set-up (tuner/overhead.py).

The arithmetic here is pure (ASHA's rungs, slots, the schedule); `sweep_forecast` runs the
calibration, in this process or as a Ray task with one trial's resources on a cluster.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from trainables.progress import duration
from tuner.overhead import Overhead, read_overhead


def asha_rungs(max_t: int, grace: int, rf: float) -> list[int]:
    """The epochs at which ASHA can stop a trial (Ray's bracket 0), below max_t."""
    count = int(math.log(max_t / grace) / math.log(rf) + 1)
    return sorted(m for m in (int(grace * rf**k) for k in range(count)) if m < max_t)


def survivors(arrivals: float, rf: float) -> float:
    """Expected trials that continue past an async ASHA rung reached by `arrivals` trials
    in random order: an arrival continues when it is at or above the (1 - 1/rf) percentile
    of the results recorded before it (Ray's `_Bracket.cutoff`, interpolated). After m
    results that percentile sits at rank p(m-1) of m+1 equally likely places, so the
    arrival continues with probability (m - p(m-1)) / (m+1); the first always does."""
    whole, p = int(arrivals), 1 - 1 / rf

    def passing(m: int) -> float:
        return 1.0 if m == 0 else (m - p * (m - 1)) / (m + 1)

    total = sum(passing(m) for m in range(whole))
    return total + (arrivals - whole) * passing(whole)


def stop_epochs(num_trials: int, scheduler: str, max_t: int, grace: int, rf: float) -> list:
    """[(epoch, expected trials that stop there)], the last at max_t."""
    if scheduler != "asha":
        return [(max_t, float(num_trials))]
    stops, arriving = [], float(num_trials)
    for rung in asha_rungs(max_t, grace, rf):
        going_on = survivors(arriving, rf)
        stops.append((rung, arriving - going_on))
        arriving = going_on
    return [*stops, (max_t, arriving)]


def slots(nodes: list[tuple[float, float]], cpu: float, gpu: float) -> int:
    """Trials that run at once on nodes of (CPUs, GPUs), each trial taking `cpu`, `gpu`."""
    total = 0
    for have_cpu, have_gpu in nodes:
        by_cpu = math.floor(have_cpu / cpu + 1e-9) if cpu else math.inf
        by_gpu = math.floor(have_gpu / gpu + 1e-9) if gpu else math.inf
        fit = min(by_cpu, by_gpu)
        total += 0 if math.isinf(fit) else int(fit)
    return max(1, total)


def makespan(durations: list[tuple[float, float]], concurrency: int, longest: float) -> float:
    """Seconds for (duration, count) jobs on `concurrency` slots: the work spread evenly,
    plus half of the worst tail a greedy schedule can leave (one longest job started last
    on a slot while the others sit idle); the longest job when every one has a slot."""
    work = sum(d * n for d, n in durations)
    if concurrency <= 1:
        return work
    if sum(n for _, n in durations) <= concurrency:  # all at once: the longest decides
        return longest
    return work / concurrency + (1 - 1 / concurrency) * longest / 2


@dataclass
class Forecast:
    trial_epochs: float  # expected under the scheduler
    full_epochs: int  # every trial to max_t
    scheduler: str
    confirm_runs: int  # extra full-length runs after the search
    concurrency: int
    search_s: float
    confirm_s: float
    device_hours: float
    device_kind: str  # "GPU" or "CPU"
    calibrated: str  # what was measured, for the header
    cached: bool  # every measurement came from the calibration cache
    budget_s: float | None = None
    overhead: Overhead | None = None  # measured by the last search on this set-up
    by_plan: dict[str, Any] = field(default_factory=dict)  # cost key -> Calibration
    device: str = ""
    task: str = ""  # whose overhead applies (tuner/overhead.py)
    pack: int = 1  # trials per pack (tuner/packs.py); 1: unpacked

    @property
    def seconds(self) -> float:
        return self.search_s + self.confirm_s

    def line(self) -> str:
        epochs = (
            f"~{self.trial_epochs:.0f} trial-epochs under ASHA ({self.full_epochs} with every "
            "trial to the end)"
            if self.scheduler == "asha"
            else f"{self.full_epochs} trial-epochs (every trial to the end)"
        )
        confirm = f" + {self.confirm_runs} confirmation runs" if self.confirm_runs else ""
        text = (
            f"{epochs}{confirm}, {self.concurrency} trial{'s' if self.concurrency != 1 else ''} "
            f"at a time{self.packing() if self.pack > 1 else ''}: ~{duration(self.seconds)}, "
            f"{self.device_hours:.2g} {self.device_kind}-"
            f"hours (calibrated{' earlier' if self.cached else ''}: {self.calibrated}; "
            + (
                self.overhead.describe()
                if self.overhead
                else "no sweep measured here yet: Tune's overhead not included"
            )
            + ")"
        )
        if self.exceeds_budget():
            text += (
                f"\n  budget     the forecast exceeds --time-budget {duration(self.budget_s)}: "
                "the sweep will stop there (resumable with --resume)"
            )
        elif self.budget_s is not None and self.seconds > self.budget_s:
            text += (
                f"\n  budget     the search (~{duration(self.search_s)}) fits --time-budget "
                f"{duration(self.budget_s)}; the confirmation after it (~"
                f"{duration(self.confirm_s)}) is not cut by the budget"
            )
        return text

    def packing(self) -> str:
        """Packs: at the speed the last packed sweep here measured, else the stated one."""
        from tuner.packs import PACK_FACTOR

        packs = math.ceil(self.concurrency / self.pack)
        speed = f"assumed {PACK_FACTOR:g}x the summed speed of {self.pack} separate trials"
        speed = "their speed as the last packed sweep here measured" if self.overhead else speed
        return f" in {packs} pack{'s' if packs != 1 else ''} of up to {self.pack}, {speed}"

    def exceeds_budget(self) -> bool:
        # The budget stops the search; the confirmation that follows it is not cut.
        return self.budget_s is not None and self.search_s > self.budget_s

    def document(self) -> dict[str, Any]:
        return {
            "seconds": round(self.seconds, 1),
            "search_s": round(self.search_s, 1),
            "confirm_s": round(self.confirm_s, 1),
            "trial_epochs": round(self.trial_epochs, 1),
            "full_epochs": self.full_epochs,
            "confirm_runs": self.confirm_runs,
            "concurrency": self.concurrency,
            "device_hours": round(self.device_hours, 4),
            "device_kind": self.device_kind,
            "calibrated": self.calibrated,
            "budget_s": self.budget_s,
            "exceeds_budget": self.exceeds_budget(),
            "overhead": dataclasses.asdict(self.overhead) if self.overhead else None,
            "pack": self.pack,
        }


def plan_forecast(
    prep: Any,
    calibrations: list[Any],
    concurrency: int,
    gpu: float,
    cpu: float,
    cached: bool,
    overhead: Overhead | None = None,
    pack: int = 1,
) -> Forecast:
    """The forecast of `prep`'s sweep; `calibrations[i]` is the cost of candidate i (for
    grids, candidate i is trial i). Packed (`pack` trials per pack, `cpu`/`gpu` one trial's
    share), a trial's epochs take `pack` / PACK_FACTOR times one trial's alone, unless the
    overhead was measured by a packed sweep (its epoch speed holds the packing)."""
    from tuner.packs import PACK_FACTOR

    slower = pack / PACK_FACTOR if pack > 1 else 1.0
    s = prep.space.scheduler
    grace, max_t = min(s.grace_period, prep.max_t), prep.max_t
    n = prep.space.num_trials()
    stops = stop_epochs(n, prep.scheduler, max_t, grace, s.reduction_factor)
    expected = sum(epoch * count for epoch, count in stops)
    mean_epochs = expected / n
    # Sampled spaces: the candidates are the bounds of each range; their mean stands in.

    def seconds(calibration: Any, epochs: float) -> float:
        if overhead is None:
            return calibration.trial_s(epochs * slower)
        return overhead.trial_seconds(calibration, epochs)

    per_trial = [seconds(c, mean_epochs) for c in calibrations]
    mean_trial = sum(per_trial) / len(per_trial)
    longest = max(seconds(c, max_t) for c in calibrations)
    # Each phase starts its workers, which import the task: as the last search measured
    # it, or before any, the imports a fresh interpreter took.
    start = overhead.phase_s if overhead else max(c.import_s for c in calibrations)
    search_s = start + makespan([(mean_trial, n)], min(concurrency, n), longest)
    runs = math.ceil(prep.confirm.runs(dict(stops).get(max_t, 0.0)))
    full = sum(seconds(c, max_t) for c in calibrations) / len(calibrations)
    # The confirmation is a Tuner of its own: its workers import the task again.
    confirm_s = start + math.ceil(runs / concurrency) * full if runs else 0.0
    trial_seconds = mean_trial * n + runs * full
    kind, per = ("GPU", gpu) if gpu else ("CPU", cpu)
    steps = sorted({c.step_s for c in calibrations})
    first = calibrations[0]
    calibrated = (
        first.describe()
        if len(steps) == 1
        else f"{steps[0]:.2g}-{steps[-1]:.2g} s per step over {len(steps)} batch plans on "
        f"{first.device}"
    )
    return Forecast(
        trial_epochs=expected,
        full_epochs=n * max_t,
        scheduler=prep.scheduler,
        confirm_runs=runs,
        concurrency=min(concurrency, n),
        search_s=search_s,
        confirm_s=confirm_s,
        device_hours=trial_seconds * per / 3600,
        device_kind=kind,
        calibrated=calibrated,
        cached=cached,
        budget_s=prep.options.time_budget,
        overhead=overhead,
        device=first.device,
        pack=pack,
    )


def local_nodes() -> list[dict[str, Any]]:
    """This machine as Ray's node list would show it once a local Ray starts."""
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return [{"Alive": True, "Resources": {"CPU": float(os.cpu_count() or 1), "GPU": gpus}}]


def data_id(prep: Any) -> str:
    """The data as the calibration cache keys it: where it is and what was loaded."""
    where = prep.base.get("data_dir", prep.base.get("data_path", ""))
    return f"{where}|{prep.base.get('pattern', '')}|{prep.task.summary(prep.data)}"


class NotMeasured(RuntimeError):
    """The calibration could not run a trial's steps (the sweep's trials would fail too)."""


Measure = Callable[[dict[str, Any], Any, str, str], tuple[Any, bool]]


def sweep_forecast(
    prep: Any, data: Any, cpu: float, gpu: float, nodes: list[dict[str, Any]], measure: Measure
) -> Forecast:
    """Calibrate each distinct plan of the candidates on the data the trials get
    (`measure(flat, data, data_id, device)` -> (Calibration, cached)); forecast the sweep."""
    from trainables.calibrate import plan_key

    device = "cuda" if gpu else "cpu"
    ident = data_id(prep)
    measured: dict[str, tuple[Any, bool]] = {}
    calibrations, all_cached = [], True
    for config in prep.candidates:
        flat = {**config, "torch_threads": max(1, int(cpu))}
        key = plan_key(config)
        if key not in measured:
            try:
                measured[key] = measure(flat, data, ident, device)
            except Exception as exc:  # noqa: BLE001 - the trials will meet it too; say it
                raise NotMeasured(f"{type(exc).__name__}: {exc}") from exc
        calibration, cached = measured[key]
        calibrations.append(calibration)
        all_cached = all_cached and cached
    alive = [n for n in nodes if n.get("Alive")]
    have = [(n["Resources"].get("CPU", 0), n["Resources"].get("GPU", 0)) for n in alive]
    from tuner.packs import plan_packs, trial_share

    packing = plan_packs(prep)
    pack = packing.size
    cpu, gpu = trial_share(packing, cpu, gpu)  # packed: one trial's share of a pack
    concurrency = slots(have, cpu, gpu)
    if prep.options.max_concurrent:
        concurrency = min(concurrency, prep.options.max_concurrent)
    concurrency = min(concurrency, prep.space.num_trials())
    # Packed sweeps learn their own overhead: their epochs' speed holds the packing.
    device = calibrations[0].device + (f", packs of {pack}" if pack > 1 else "")
    overhead = read_overhead(prep.task.name, device, concurrency)
    fc = plan_forecast(prep, calibrations, concurrency, gpu, cpu, all_cached, overhead, pack)
    fc.device = device
    fc.by_plan = {key: calibration for key, (calibration, _) in measured.items()}
    fc.task = prep.task.name
    return fc


def in_process(task: str) -> Measure:
    """Measure here (a local sweep: this machine is where the trials run)."""
    import torch

    from trainables.calibrate import calibrate

    def measure(flat: dict[str, Any], data: Any, ident: str, device: str) -> tuple[Any, bool]:
        threads = torch.get_num_threads()
        try:
            return calibrate(task, flat, data, ident, device)
        finally:
            torch.set_num_threads(threads)  # the trial's threads, not the driver's

    return measure


def as_ray_task(task: str, cpu: float, gpu: float) -> Measure:
    """Measure on a node of the cluster, with one trial's resources (its cache is there)."""
    import ray

    from trainables.calibrate import calibrate

    remote = ray.remote(num_cpus=cpu, num_gpus=gpu)(calibrate)

    def measure(flat: dict[str, Any], data: Any, ident: str, device: str) -> tuple[Any, bool]:
        return ray.get(remote.remote(task, flat, data, ident, device))

    return measure


def outcome_line(fc: Forecast | None, wall_s: float) -> str:
    """Forecast against the result, printed at the end."""
    if fc is None:
        return f"wall time {duration(wall_s)} (no forecast)"
    ratio = wall_s / fc.seconds if fc.seconds else math.inf
    return (
        f"wall time {duration(wall_s)} against the forecast {duration(fc.seconds)} "
        f"(actual / forecast = {ratio:.2f})"
    )


def log_outcome(tracker: Any, parent_id: str, fc: Forecast | None, wall_s: float) -> None:
    """`forecast_s` and `wall_s` on the sweep's parent MLflow run."""
    tracker.client.log_metric(parent_id, "wall_s", wall_s)
    if fc is not None:
        tracker.client.log_metric(parent_id, "forecast_s", fc.seconds)
