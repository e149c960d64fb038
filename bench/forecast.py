"""How far the sweep forecast is off: the demo sweep and `paper_robovlms`, forecast vs actual.

    python bench/forecast.py [--spaces grid_robovlms paper_robovlms] [--fresh-cache]
                             [-- extra tuner.run arguments]

Runs `python -m tuner.run --space S` for each space in turn (demo data, a temporary folder
for results and MLflow), and reads `forecast_s` and `wall_s` from each sweep's parent
MLflow run. The forecast uses the calibration cache and the overhead the last search on
this machine measured, as a user's sweep would (`--fresh-cache`: an empty cache, so the
first sweep has no measured overhead; the second learns from the first). Prints, per
sweep, the forecast, the wall time and actual / forecast, the load average before and
after (the forecast cannot know what else the machine will run meanwhile), and last
`forecast_error=<largest |actual / forecast - 1| over the sweeps>`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path


def run_sweep(space: str, workdir: Path, env: dict[str, str], extra: list[str]) -> dict:
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    command = [
        sys.executable, "-m", "tuner.run", "--space", space, "--name", space,
        "--storage-path", str(workdir / "results"), "--mlflow-uri", uri, *extra,
    ]  # fmt: skip
    load_before = os.getloadavg()[0]
    done = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{space}: tuner.run exited {done.returncode}:\n{done.stderr[-3000:]}")
    header = next(
        (line.strip() for line in done.stdout.splitlines() if line.startswith("  forecast")), ""
    )
    load = (load_before, os.getloadavg()[0])
    return {**parent_metrics(uri, space), "header": header, "load": load}


def parent_metrics(uri: str, name: str) -> dict:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("vla-tune")
    runs = client.search_runs(
        [experiment.experiment_id], filter_string=f"attributes.run_name = '{name}'"
    )
    metrics = runs[0].data.metrics
    return {"forecast_s": metrics["forecast_s"], "wall_s": metrics["wall_s"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spaces", nargs="+", default=["grid_robovlms", "paper_robovlms"])
    parser.add_argument("--fresh-cache", action="store_true", help="an empty calibration cache")
    parser.add_argument("extra", nargs="*", help="after --: more tuner.run arguments")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start")
    errors = []
    with tempfile.TemporaryDirectory(prefix="bench-forecast-") as tmp:
        workdir = Path(tmp)
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        if args.fresh_cache:
            env["VLA_TUNE_CACHE"] = str(workdir / "cache")
        for space in args.spaces:
            got = run_sweep(space, workdir, env, args.extra)
            ratio = got["wall_s"] / got["forecast_s"]
            errors.append(abs(ratio - 1))
            print(f"{space}:")
            print(f"  {got['header']}")
            print(
                f"  forecast {got['forecast_s']:.0f} s, actual {got['wall_s']:.0f} s, "
                f"actual / forecast = {ratio:.2f}; load average {got['load'][0]:.1f} before, "
                f"{got['load'][1]:.1f} after"
            )
    print(f"forecast_error={max(errors):.2f}")


if __name__ == "__main__":
    main()
