"""Look at what the tuned policy does: `python -m tuner.evaluate [--name SWEEP]`.

Loads the sweep's best checkpoint (or an export folder, `--from DIR`) and hands it to its
task's `evaluate` hook, which runs it over the sweep's validation data (or all of
`--data-dir`) and writes its plots and summary.json to `--out` (default
evaluation/<sweep>); for mobile_vla see trainables/mobile_vla/evaluate_policy.py. From a
sweep, the same files go to its parent MLflow run under `evaluation/`.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainables.cli import exit_with
from trainables.training_state import TRIAL_CONFIG_FILE
from tuner.checks import BadInput
from tuner.export import EXPORT_RECORD, one_line
from tuner.storage import find_best

ARTIFACT_DIR = "evaluation"


@dataclass
class Source:
    """Where the policy comes from: a sweep's best checkpoint or an export folder."""

    name: str
    folder: Path
    flat: dict[str, Any]  # the trial config the policy trained with
    exported: bool
    mlflow_uri: str | None = None
    best_run_id: str | None = None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tuner.evaluate", description=__doc__)
    p.add_argument("--name", help="sweep name (default: the most recent sweep)")
    p.add_argument("--storage-path", default="ray_results")
    p.add_argument("--from", dest="export_dir", help="an export folder instead of a sweep")
    p.add_argument("--data-dir", help="evaluate every episode here (default: validation set)")
    p.add_argument("--pattern", help="glob inside --data-dir (default episode_*.h5)")
    p.add_argument("--out", help="output folder (default evaluation/<sweep>)")
    p.add_argument("--mlflow-uri", help="default: the sweep's (from best.json)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="sets",
                   help="a data setting, e.g. default_instruction='go to the box'")  # fmt: skip
    return p


def find_source(args: argparse.Namespace) -> tuple[Source, str]:
    """(where the policy is, its trainable's name)."""
    if args.export_dir:
        folder = Path(args.export_dir)
        config = folder / TRIAL_CONFIG_FILE
        if not config.is_file():
            raise BadInput(f"{config}: missing (is {folder} a tuner.export folder?)")
        record = folder / EXPORT_RECORD
        if not record.is_file():
            raise BadInput(f"{record}: missing (export it again with python -m tuner.export)")
        trainable = json.loads(record.read_text())["trainable"]
        flat = json.loads(config.read_text())
        return Source(folder.resolve().name, folder, flat, True), trainable
    storage, best, folder = find_best(args.storage_path, args.name, "evaluate")
    source = Source(storage.name, folder, best["config"], False, best.get("mlflow_uri"),
                    best.get("mlflow_run_id"))  # fmt: skip
    return source, best["trainable"]


def log_to_parent(source: Source, uri: str | None, out: Path) -> str:
    """Log `out` under evaluation/ in the sweep's parent run; returns a line to print."""
    from mlflow.tracking import MlflowClient

    if not (uri and source.best_run_id):
        return "mlflow: the sweep recorded no run to log to"
    client = MlflowClient(uri)
    parent = client.get_run(source.best_run_id).data.tags.get("mlflow.parentRunId")
    if not parent:
        return f"mlflow: run {source.best_run_id} has no parent run"
    client.log_artifacts(parent, str(out), ARTIFACT_DIR)
    return f"mlflow: logged to run {parent} under {ARTIFACT_DIR}/"


def evaluate(args: argparse.Namespace) -> int:
    source, trainable = find_source(args)
    from trainables.config import ConfigError, parse_assignments
    from trainables.task import EvaluationRequest, get_task

    task = get_task(trainable)
    if task.evaluate is None:
        raise BadInput(f"{source.folder}: trainable {trainable} has no evaluation")
    out = Path(args.out or Path("evaluation") / source.name)
    try:
        request = EvaluationRequest(
            source.flat, parse_assignments(args.sets), source.folder, source.exported,
            args.data_dir, args.pattern, out,
        )  # fmt: skip
        lines = task.evaluate(request)
    except (ConfigError, ValueError, OSError) as exc:
        raise BadInput(one_line(exc)) from None
    print(f"{source.name}: {lines[0]}")
    print("\n".join(lines[1:]))
    if not source.exported:
        try:
            print(log_to_parent(source, args.mlflow_uri or source.mlflow_uri, out))
        except Exception as exc:  # noqa: BLE001 - the files are written; say why MLflow is not
            print(f"warning: mlflow: {one_line(exc)}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return evaluate(args)
    except BadInput as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    exit_with(main())
