"""The real sweep on a card: Ray Tune hands trials their GPU slots, MLflow gets their runs.

    python bench/gpu_sweep.py --out bench/results/gpu_sweep.json       # a CUDA box, ~5 min
    python bench/gpu_sweep.py --device cpu --out /tmp/gpu_sweep.json   # the same, small, here

1. Ray, MLflow and Optuna: used where they import; else the wheels carried in `--wheels`
   (bench/gpu_wheels.py made them) are installed into `--site` with pip (no index, no
   dependencies) and put on PYTHONPATH, which the tuner and its Ray workers inherit.
2. Collector-format demo episodes, and a Kosmos-2 directory with random weights saved
   like a checkout: the default Kosmos2Config (the real 1.6B shape) on CUDA, a small one
   on a CPU (or `--model DIR`, any checkout).
3. A space at the grid's batch sizes (128, 256, 512; `--batches`), one learning rate, FIFO.
4. `python -m tuner.run` with that space, the model, MLflow in SQLite, no confirmation:
   first `--gpus-per-trial 1`, then 0.5 (two trials per card, each capped at its share).
   On a CPU the passes are `--cpus-per-trial` all cores, then half of them.
5. From MLflow, per trial: its device and `gpu_share` params, the micro-batch the probe
   chose, samples/s, peak_mem_mb and mfu; per pass: the forecast against the wall time
   (the parent run's forecast_s and wall_s) and the exit status.
Writes --out as JSON (its `summary`: sweep_exit, sweep_forecast_ratio) and prints a table.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
NEEDED = ("ray", "mlflow", "optuna")
GRID_BATCHES = "128,256,512"  # grid_robovlms' global batches
SHARES = (1.0, 0.5)


def ensure_packages(wheels: Path, site: Path) -> str | None:
    """None when Ray, MLflow and Optuna import here; else install the carried wheels into
    `site`, put it first on sys.path and return it (for the subprocesses' PYTHONPATH)."""
    if all(importlib.util.find_spec(name) for name in NEEDED):
        return None
    found = sorted(wheels.glob("*.whl"))
    if not found:
        raise SystemExit(f"gpu_sweep: {', '.join(NEEDED)} missing and no wheels in {wheels}")
    command = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
               "--no-compile", "--upgrade", "--target", str(site), *map(str, found)]  # fmt: skip
    subprocess.run(command, check=True)
    sys.path.insert(0, str(site))
    importlib.invalidate_caches()
    return str(site)


def space_yaml(batches: tuple[int, ...], max_epochs: int) -> str:
    values = ", ".join(str(b) for b in batches)
    return (
        "description: the grid's batch sizes on a card (bench/gpu_sweep.py)\n"
        "trainable: mobile_vla\nmetric: val_loss\nmode: min\nsearch: grid\n"
        f"params:\n  batch_size: [{values}]\n"
        f"fixed:\n  learning_rate: 1.0e-4\n  max_epochs: {max_epochs}\n"
        "scheduler:\n  type: fifo\n"
    )


def write_inputs(root: Path, args: argparse.Namespace) -> tuple[str, str]:
    """(data dir, model dir): demo episodes, and the model to load."""
    import torch
    from common import write_random_kosmos2
    from transformers import Kosmos2Config

    from trainables.mobile_vla.dataset import DataConfig, inspect_all, list_episodes
    from trainables.mobile_vla.demo_data import write_demo_episodes

    data_dir = root / "episodes"
    write_demo_episodes(data_dir, args.episodes, seed=0, height=args.height, width=args.width)
    if args.model:
        return str(data_dir), args.model
    cfg = DataConfig(data_dir=str(data_dir))
    _, instructions, _ = inspect_all(list_episodes(data_dir, "episode_*.h5"), cfg)
    if args.device == "cuda":
        config = Kosmos2Config()
    else:
        from gpu import SMALL_KOSMOS

        config = Kosmos2Config(**SMALL_KOSMOS)
    model = root / "kosmos2-random"
    write_random_kosmos2(model, instructions, config, torch.device(args.device))
    return str(data_dir), str(model)


def pass_command(share: float, args, space: Path, data_dir: str, model: str, uri: str):
    resources = (
        ["--gpus-per-trial", f"{share:g}"]
        if args.device == "cuda"
        else ["--cpus-per-trial", f"{max(1, round(share * (os.cpu_count() or 1))):g}"]
    )
    return [sys.executable, "-m", "tuner.run", "--space", str(space), "--name", f"share-{share:g}",
            "--data-dir", data_dir, "--model", model, "--mlflow-uri", uri, "--confirm", "0",
            "--storage-path", str(Path(space).parent / "results"), *resources]  # fmt: skip


def stop(proc: subprocess.Popen, grace_s: float) -> None:
    """Ctrl-C to the sweep's process group (it saves what ran and stops Ray), then kill
    what is left of it after `grace_s`."""
    os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def run_pass(command: list[str], env: dict, log: Path, limit_s: float, cwd: Path) -> tuple:
    """(exit status, wall seconds); past `limit_s` the sweep is stopped: status 124, as
    `timeout` gives. If this script is stopped meanwhile (SIGTERM), so is the sweep: its
    processes must not hold the card after the script is gone."""
    began = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
        try:
            status = proc.wait(timeout=max(1.0, limit_s))
        except subprocess.TimeoutExpired:
            stop(proc, 20)
            status = 124
        finally:
            if proc.poll() is None:  # stopped from outside
                stop(proc, 5)
    return status, time.perf_counter() - began


def last(client, run_id: str, key: str) -> float | None:
    history = client.get_metric_history(run_id, key)
    return max(history, key=lambda m: m.step).value if history else None


def read_runs(uri: str, name: str) -> dict:
    """The parent run's forecast and wall time, and each child run's figures."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("vla-tune")
    if experiment is None:
        return {"trials": []}
    parents = client.search_runs(
        [experiment.experiment_id], filter_string=f"attributes.run_name = '{name}'"
    )
    if not parents:
        return {"trials": []}
    parent = parents[0]
    children = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'",
    )
    trials = []
    for run in sorted(children, key=lambda r: r.info.run_name or ""):
        params, rid = run.data.params, run.info.run_id
        trials.append({
            "run": run.info.run_name, "status": run.info.status,
            "batch_size": params.get("batch_size"), "device": params.get("device"),
            "gpu_share": params.get("gpu_share"), "precision": params.get("precision"),
            "micro_batch_frames": params.get("micro_batch_frames"),
            "samples_per_s": last(client, rid, "samples_per_s"),
            "peak_mem_mb": last(client, rid, "peak_mem_mb"), "mfu": last(client, rid, "mfu"),
            "epochs": len(client.get_metric_history(rid, "train_loss")),
        })  # fmt: skip
    metrics = parent.data.metrics
    forecast, wall = metrics.get("forecast_s"), metrics.get("wall_s")
    ratio = wall / forecast if forecast and wall else None
    return {"forecast_s": forecast, "wall_s": wall, "actual_over_forecast": ratio,
            "trials": trials}  # fmt: skip


def summarize(passes: list[dict]) -> dict:
    """sweep_exit: the worst exit status (0 only when every pass exited 0); the ratio of
    the pass furthest from its forecast (None when a pass has none)."""
    ratios = [p.get("actual_over_forecast") for p in passes]
    worst = None if None in ratios or not ratios else max(ratios, key=lambda r: abs(r - 1))
    return {"sweep_exit": max((p["exit"] for p in passes), default=None),
            "sweep_forecast_ratio": worst}  # fmt: skip


def print_table(result: dict) -> None:
    for p in result["passes"]:
        ratio = p.get("actual_over_forecast")
        print(f"\n## {p['resources']}: exit {p['exit']} after {p['seconds']:.0f} s; the "
              f"sweep's own wall_s {p.get('wall_s') or 0:.0f} s (first trial's launch to last "
              f"trial's end) / forecast_s {p.get('forecast_s') or 0:.0f} s = "
              f"{f'{ratio:.2f}' if ratio else '-'}")  # fmt: skip
        print(
            "| trial | batch | device | gpu_share | micro-batch frames | samples/s | peak MB "
            "| MFU | epochs |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
        )
        for t in p["trials"]:
            mfu = f"{100 * t['mfu']:.1f}%" if t["mfu"] is not None else "-"
            rate = f"{t['samples_per_s']:.1f}" if t["samples_per_s"] else "-"
            peak = f"{t['peak_mem_mb']:.0f}" if t["peak_mem_mb"] else "-"
            print(
                f"| {t['run']} | {t['batch_size']} | {t['device']} | {t['gpu_share']} | "
                f"{t['micro_batch_frames']} | {rate} | {peak} | {mfu} | {t['epochs']} |"
            )
    print(" ".join(f"{k}={v}" for k, v in result["summary"].items()))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    p.add_argument("--model", help="a Kosmos-2 directory (default: random weights, built)")
    p.add_argument("--episodes", type=int, default=56, help="demo episodes (512+ windows)")
    p.add_argument("--height", type=int, default=144, help="frame height (collector: 720)")
    p.add_argument("--width", type=int, default=256, help="frame width (collector: 1280)")
    p.add_argument("--max-epochs", type=int, default=1)
    p.add_argument("--shares", default="1,0.5", help="the passes' GPU (or CPU) shares")
    p.add_argument("--batches", default=GRID_BATCHES, help="the space's global batches")
    p.add_argument("--pass-limit", type=float, default=240.0, help="seconds per pass at most")
    p.add_argument("--total-limit", type=float, default=3600.0, help="seconds for everything")
    p.add_argument("--wheels", default=str(ROOT / ".whl"), help="carried wheels")
    p.add_argument("--site", default="/tmp/vla-site", help="where the wheels are installed")
    p.add_argument("--work", help="working folder (default: a temporary one)")
    p.add_argument("--out", help="write the results as JSON here")
    return p.parse_args(argv)


def save(args: argparse.Namespace, passes: list[dict], site: str | None, began: float) -> dict:
    """The results so far, written after every pass (a run cut short keeps what ran)."""
    result = {"device": args.device, "model": args.model or "random (built here)",
              "batches": batches_of(args), "passes": passes, "summary": summarize(passes),
              "seconds": time.perf_counter() - began,
              "wheels": site or "installed here"}  # fmt: skip
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))
    return result


def batches_of(args: argparse.Namespace) -> tuple[int, ...]:
    return tuple(int(b) for b in args.batches.split(","))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # `timeout`: stop the sweep too
    site = ensure_packages(Path(args.wheels), Path(args.site))
    began, passes = time.perf_counter(), []
    with tempfile.TemporaryDirectory(prefix="gpu-sweep-", dir=args.work) as tmp:
        root = Path(tmp)
        data_dir, model = write_inputs(root, args)
        space = root / "gpu_sweep.yaml"
        space.write_text(space_yaml(batches_of(args), args.max_epochs))
        uri = f"sqlite:///{root / 'mlflow.db'}"
        paths = [p for p in (site, str(ROOT), os.environ.get("PYTHONPATH")) if p]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
        env.setdefault("VLA_TUNE_CACHE", str(root / "cache"))  # decoded frames, calibration
        for share in (float(s) for s in args.shares.split(",")):
            command = pass_command(share, args, space, data_dir, model, uri)
            log = Path(args.out or root / "x").with_suffix(f".share-{share:g}.log")
            limit = min(args.pass_limit, args.total_limit - (time.perf_counter() - began) - 30)
            status, seconds = run_pass(command, env, log, limit, root)
            resources = " ".join(command[command.index("--storage-path") + 2 :])
            passes.append({"resources": resources, "exit": status, "seconds": seconds,
                           "log": str(log), **read_runs(uri, f"share-{share:g}")})  # fmt: skip
            print(log.read_text()[-1500:] if status else f"{resources}: exit 0", flush=True)
            result = save(args, passes, site, began)
    print_table(result)
    return 0 if result["summary"]["sweep_exit"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
