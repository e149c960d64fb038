"""Run a hyperparameter sweep: `python -m tuner.run --space grid_robovlms`.

With no other argument it runs for real on a bare CPU machine: a tiny Kosmos-2 built from
a config, demo episodes generated once in the real HDF5 format, a local Ray on loopback
and MLflow in ./mlruns/mlflow.db. With arguments the same code trains the real model on
your episodes, on GPUs, on a cluster (RAY_ADDRESS or --address).

Everything is checked before the first trial starts (space, --set keys and values, data,
batch plans, MLflow); bad input is one line and exit 2. Exit 1 when trials failed.
An interrupted sweep continues with `--resume` (the latest sweep of the space, or --name).

The story, in `main` and `run`: options -> checked input (tuner/prepare.py) -> header ->
forecast (tuner/measure.py) -> Ray (tuner/ray_start.py) -> Tuner (tuner/tune_setup.py) ->
fit -> summary.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from trainables.cli import exit_with
from tuner import budget, forecast, overhead, packs
from tuner.checks import BadInput, check_precision, trial_resources
from tuner.eta import Eta
from tuner.header import print_dry_run, print_header
from tuner.measure import cluster_forecast, local_forecast, precompute
from tuner.prepare import Prepared, SweepOptions, options_from_args, prepare
from tuner.ray_start import (
    autoscaler_node_types,
    check_storage,
    local_temp_dir,
    quiet_tune_output,
    start_ray,
)
from tuner.storage import SWEEP_FILE, Storage
from tuner.tune_setup import fit, search_phase


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tuner.run",
        description=__doc__.split("\n\n")[0],
        epilog="Example: python -m tuner.run --space grid_robovlms --data-dir /data/mobile_vla "
        "--model /models/kosmos-2-patch14-224 --gpus-per-trial 0.5",
    )
    p.add_argument("--space", default="grid_robovlms", help="space name or YAML path")
    p.add_argument(
        "--data-dir",
        help="the task's data: episode folder, or records file for robot_code (default: demo data)",
    )
    p.add_argument("--pattern", help="glob inside --data-dir (default episode_*.h5)")
    p.add_argument("--model", help="'tiny' (default) or a local Kosmos-2 directory / hub id")
    p.add_argument("--max-epochs", type=int, help="epochs per trial (ASHA's max_t)")
    p.add_argument("--search", choices=["grid", "random", "optuna"], help="override the space")
    p.add_argument("--num-samples", type=int, help="trials for random/optuna (grid: repeats)")
    p.add_argument("--scheduler", choices=["asha", "fifo"], help="fifo: every trial runs fully")
    p.add_argument("--gpus-per-trial", type=float, help="fractions share a GPU (default: 1 if any)")
    p.add_argument("--cpus-per-trial", type=float, help="CPUs per trial; torch threads follow")
    p.add_argument("--max-concurrent", type=int, help="at most this many trials at once")
    p.add_argument("--storage-path", default="ray_results", help="local dir, NFS or s3://")
    p.add_argument("--mlflow-uri", help="default sqlite:///./mlruns/mlflow.db")
    p.add_argument("--experiment", default="vla-tune", help="MLflow experiment name")
    p.add_argument("--name", help="sweep folder name (default <space>-<date>-<time>)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted sweep")
    p.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else local)")
    p.add_argument(
        "--shared-storage",
        action="store_true",
        help="a local --storage-path is the same folder on every node (NFS): allow multi-node",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        dest="sets",
        help="a config value (repeatable); a key the space searches is pinned to it",
    )
    p.add_argument(
        "--confirm",
        type=int,
        metavar="K",
        help="train the top K configurations again with more seeds (0: off; default: the space's)",
    )
    p.add_argument("--seeds", type=int, metavar="N", help="runs per confirmed configuration")
    p.add_argument(
        "--min-effect",
        type=float,
        metavar="F",
        help="a difference below this fraction of the metric is a tie in practice (default 0.01)",
    )
    p.add_argument("--dry-run", action="store_true", help="print the trials and plans, then exit")
    p.add_argument(
        "--from-robovlms",
        metavar="CONFIG.json",
        help="a RoboVLMs config: its values are the sweep's base (the space searches, --set wins)",
    )
    p.add_argument("--json", action="store_true", help="with --dry-run: one JSON document")
    p.add_argument(
        "--pack",
        type=int,
        metavar="K",
        help="train up to K LoRA trials per worker on one shared base (default 1: unpacked)",
    )
    p.add_argument(
        "--time-budget",
        type=budget.budget_option,
        metavar="2h",
        help="stop the sweep after this long (s, m, h: 90m, 1h30m); --resume continues",
    )
    return p


def sweep_name(opts: SweepOptions) -> str:
    return opts.name or f"{Path(opts.space).stem}-{time.strftime('%Y%m%d-%H%M%S')}"


def run(
    prep: Prepared,
    storage: Storage,
    mlflow_uri: str,
    resume: bool,
    fc: forecast.Forecast | None = None,
    data: Any = None,
) -> int:
    """Start Ray, run (or restore) the Tuner, summarize. Returns the exit status. With a
    forecast measured here, `data` is the shared data it was measured on."""
    quiet_tune_output()
    import ray

    from tuner import confirm, importance, report, summary
    from tuner.tracking import SweepTracker

    opts = prep.options
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # no migration chatter
    start_ray(opts.address)
    try:
        check_storage(storage, opts.shared_storage)  # BadInput: nothing written yet
        nodes = ray.nodes() + autoscaler_node_types()
        cpu, gpu = trial_resources(opts.cpus_per_trial, opts.gpus_per_trial, nodes)
        check_precision(prep.base, gpu)
        if not resume:
            storage.write_json(SWEEP_FILE, dataclasses.asdict(opts))
        if data is None:  # a cluster: measured there, on one trial's resources
            data = precompute(prep, gpu)
            fc = cluster_forecast(prep, data, cpu, gpu, nodes)
        base = {**prep.base}
        base.setdefault("torch_threads", max(1, int(cpu)))
        trainable = packs.make_trainable(prep, data, cpu, gpu)
        tracking = {
            "uri": mlflow_uri,
            "experiment": opts.experiment,
            "sweep_id": opts.sweep_id,
            "artifact_root": storage.mlflow_artifact_root(mlflow_uri),
        }
        tracker = SweepTracker(**tracking)
        parent_id = tracker.start_parent(
            storage.name,
            params={
                "space": prep.space.name,
                "search": prep.space.search,
                "scheduler": prep.scheduler,
                "max_t": prep.max_t,
                "num_trials": prep.space.num_trials(),
                **{f"fixed.{k}": v for k, v in base.items()},
            },
            tags={"vla_tune.experiment_dir": storage.experiment_uri},
        )
        started, watch = time.monotonic(), budget.BudgetWatch(opts.time_budget)
        search = search_phase(prep, storage, base)
        firsts = overhead.FirstResults()
        search.time_budget_s, search.callbacks = opts.time_budget, [watch, firsts]
        search.eta = Eta.for_phase(prep, fc.concurrency if fc else 1)
        if resume:
            budget.reopen(storage)  # the trials a budget cut go on
        results = fit(prep, trainable, storage, search, tracking, resume)
        cut = budget.cut_trials(results, watch, prep.max_t) if opts.time_budget else []
        unfinished, confirmed = report.unfinished(results), None
        # Once, best first; after a cut, trials the budget kept from starting have no row.
        rows = summary.sorted_rows(prep, [r for r in results if r.config] if cut else results)
        if not (cut or unfinished or resume):  # a whole search: how Tune's overhead compares
            overhead.learn(fc, results, storage.name, started, firsts)
        if prep.confirm.top and not unfinished and not cut:
            confirmed = confirm.run_phase(prep, storage, trainable, tracking, rows, results, resume)
        wall_s = time.monotonic() - started
        if cut:
            storage.write_json(budget.BUDGET_FILE, {"cut": cut})
        forecast.log_outcome(tracker, parent_id, fc, wall_s)
        if rows:
            status = summary.finish(
                prep, storage, tracker, parent_id, rows, mlflow_uri, unfinished, confirmed
            )
            if not (cut or unfinished):  # once, over the whole search (params are set once)
                print(f"\n{importance.report_importance(prep, rows, tracker, parent_id)}")
        else:
            tracker.finish_parent("KILLED")
            status = 0
            print("\nno trial reported a result before the budget ran out")
        print(forecast.outcome_line(fc, wall_s))
        if cut:
            left = max(len(cut), prep.space.num_trials() - len(watch.ended_in_time))
            print(budget.stop_line(storage, opts.storage_path, len(cut), left, wall_s))
        return status
    finally:
        ray.shutdown()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        opts = options_from_args(args)
        storage = Storage(opts.storage_path, opts.name)
        if args.resume:
            if not opts.name:
                try:
                    storage = storage.latest(Path(opts.space).stem)
                except LookupError as exc:
                    raise BadInput(str(exc)) from None
            saved = storage.read_json(SWEEP_FILE)
            if saved is None:
                raise BadInput(
                    f"{storage.experiment_uri}: no sweep to resume ({SWEEP_FILE} missing)"
                )
            shared = opts.shared_storage or saved.get("shared_storage", False)
            opts = SweepOptions(
                **{
                    **saved,
                    "address": opts.address,
                    "shared_storage": shared,
                    "time_budget": opts.time_budget,  # only when given again
                }
            )
        else:
            storage = Storage(opts.storage_path, sweep_name(opts))
            opts.name = storage.name
            opts.sweep_id = uuid.uuid4().hex[:12]
        if not (opts.address or os.environ.get("RAY_ADDRESS")):
            local_temp_dir()  # a too-long RAY_TMPDIR: before minutes of loading
        mlflow_uri = opts.mlflow_uri or _default_mlflow_uri()
        opts.mlflow_uri = mlflow_uri
        from tuner.tracking import TrackingError, check_reachable

        try:
            check_reachable(mlflow_uri)  # cheap: before minutes of loading data
        except TrackingError as exc:
            raise BadInput(str(exc)) from None
        if args.json and not args.dry_run:
            raise BadInput("--json goes with --dry-run")
        with contextlib.redirect_stdout(sys.stderr if args.json else sys.stdout):
            prep = prepare(opts)  # with --json, stdout holds the document only
        pack = packs.plan_packs(prep)
        if not args.resume and opts.time_budget is None:
            opts.time_budget = prep.space.time_budget
        if not args.resume and storage.exists():
            raise BadInput(f"{storage.experiment_uri}: a sweep of that name exists (--resume?)")
    except BadInput as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    if not args.json:
        print_header(prep, storage, mlflow_uri)
        packs.print_line(prep, pack)
    try:
        fc, data = local_forecast(prep, quiet=args.json)
    except BadInput as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(packs.dry_run_json(prep, fc, pack))
        return 0
    if fc is not None:
        print(f"  forecast   {fc.line()}", flush=True)
    if args.dry_run:
        print_dry_run(prep)
        return 0
    try:
        return run(prep, storage, mlflow_uri, resume=args.resume, fc=fc, data=data)
    except BadInput as exc:  # found once Ray is up (a cluster's nodes)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"\ninterrupted: continue with  python -m tuner.run --resume --name {storage.name}"
            f" --storage-path {opts.storage_path}",
            file=sys.stderr,
        )
        return 130


def _default_mlflow_uri() -> str:
    from tuner.tracking import default_uri

    return default_uri(Path.cwd())


if __name__ == "__main__":
    exit_with(main())
