"""What a sweep measures before its trials: the shared data with what every trial would
otherwise compute itself, and the forecast, on this machine (before Ray starts) or on
the cluster (with one trial's resources, once Ray is up)."""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any

from tuner import forecast
from tuner.checks import BadInput, trial_resources
from tuner.prepare import Prepared


def precompute(prep: Prepared, gpu: float) -> Any:
    """The shared data plus what every trial would otherwise compute itself (frozen image
    features), computed once here on the device the trials train on."""
    if prep.task.precompute is None or not prep.share_data or prep.data is None:
        return prep.data
    import torch

    if gpu > 0 and not torch.cuda.is_available():
        print("image features: computed once per node by the trials (this driver has no GPU)")
        return prep.data
    data, line = prep.task.precompute(prep.candidates[0], prep.data, "cuda" if gpu else "cpu")
    if line:
        print(line, flush=True)
    return data


def cluster_forecast(
    prep: Prepared, data: Any, cpu: float, gpu: float, nodes: list
) -> forecast.Forecast | None:
    """The forecast measured by a Ray task with one trial's resources; printed."""
    if data is None:
        return None
    measure = forecast.as_ray_task(prep.task.name, cpu, gpu)
    try:
        fc = forecast.sweep_forecast(prep, data, cpu, gpu, nodes, measure)
    except forecast.NotMeasured as exc:
        print(f"  forecast   none: a trial's steps failed to run ({exc})", flush=True)
        return None
    print(f"  forecast   {fc.line()}", flush=True)
    return fc


def local_forecast(prep: Prepared, quiet: bool) -> tuple[forecast.Forecast | None, Any]:
    """The forecast measured on this machine and the shared data it was measured on (the
    trials get the same), or (None, None) on a cluster (measured there once Ray is up)
    and for a task without loaded data."""
    if prep.data is None:
        return None, None
    if prep.options.address or os.environ.get("RAY_ADDRESS"):
        where = sys.stderr if quiet else sys.stdout
        print("  forecast   measured on the cluster once the sweep starts", file=where)
        return None, None
    opts, nodes = prep.options, forecast.local_nodes()
    try:
        cpu, gpu = trial_resources(opts.cpus_per_trial, opts.gpus_per_trial, nodes)
    except BadInput as exc:  # a plan for another machine; a real run refuses it once Ray is up
        where = sys.stderr if quiet else sys.stdout
        print(f"  forecast   none: this machine cannot run a trial ({exc})", file=where)
        return None, None
    with contextlib.redirect_stdout(sys.stderr if quiet else sys.stdout):
        data = precompute(prep, gpu)
        measure = forecast.in_process(prep.task.name)
        try:
            return forecast.sweep_forecast(prep, data, cpu, gpu, nodes, measure), data
        except forecast.NotMeasured as exc:
            print(f"  forecast   none: a trial's steps failed to run here ({exc})", flush=True)
            return None, data
