"""Look at what the tuned policy does: `python -m tuner.evaluate [--name SWEEP]`.

Loads the sweep's best checkpoint (or an export folder, `--from DIR`) with
`trainables.mobile_vla.inference.Policy`, runs it over the sweep's validation episodes
(or every episode of `--data-dir`, any resolution) and writes to `--out`
(default evaluation/<sweep>): one PNG per episode (commanded vs predicted actions),
confusion.png (directions) and summary.json (per-dimension MAE in original units and
direction accuracy, per episode and overall). From a sweep, the same files go to its
parent MLflow run under `evaluation/`.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainables.training import TRIAL_CONFIG_FILE
from tuner.checks import BadInput
from tuner.export import one_line
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


def find_source(args: argparse.Namespace) -> Source:
    if args.export_dir:
        folder = Path(args.export_dir)
        config = folder / TRIAL_CONFIG_FILE
        if not config.is_file():
            raise BadInput(f"{config}: missing (is {folder} a tuner.export folder?)")
        return Source(folder.resolve().name, folder, json.loads(config.read_text()), True)
    storage, best, folder = find_best(args.storage_path, args.name, "evaluate")
    if best.get("trainable") != "mobile_vla":
        raise BadInput(
            f"{storage.experiment_uri}: trainable {best.get('trainable')} is not mobile_vla"
        )
    return Source(storage.name, folder, best["config"], False, best.get("mlflow_uri"),
                  best.get("mlflow_run_id"))  # fmt: skip


def data_config(source: Source, args: argparse.Namespace) -> tuple[dict[str, Any], bool]:
    """(flat config for the episodes, whether they are the validation split)."""
    from trainables.config import parse_assignments

    flat = {**source.flat, **parse_assignments(args.sets)}
    if args.data_dir:
        flat.update(data_dir=args.data_dir, val_ratio=0.0)
    if args.pattern:
        flat["pattern"] = args.pattern
    return flat, not args.data_dir


def load_episodes(flat: dict[str, Any], validation: bool):
    """(dataset, episode ids to evaluate)."""
    import numpy as np

    from trainables.mobile_vla.dataset import load_dataset
    from trainables.mobile_vla.trial_config import parse_config

    data = load_dataset(parse_config(flat).data, progress=False)
    if not validation:
        return data, list(range(data.num_episodes))
    episodes = [int(e) for e in np.unique(data.val.episode)]
    if not episodes:
        raise BadInput(f"{flat['data_dir']}: no validation episodes (give --data-dir)")
    return data, episodes


def write_results(out: Path, results, data) -> dict[str, Any]:
    from trainables.mobile_vla import action_plots, evaluation

    out.mkdir(parents=True, exist_ok=True)
    names, bound = data.action_names, data.action_bound
    summary = evaluation.summarize(results, names, bound)
    for result, episode in zip(results, summary["episodes"], strict=True):
        episode["plot"] = f"{Path(result.name).stem}.png"
        action_plots.plot_episode(result, names, out / episode["plot"])
    labels, counts = evaluation.confusion(results, names, bound)
    action_plots.plot_confusion(labels, counts, out / "confusion.png")
    summary["confusion"] = {"labels": labels, "counts": counts.tolist()}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def data_error_line(exc, data_dir: str | None) -> str:
    """The first bad file as check_data names it (`path: reason`), and how to list all."""
    if len(exc.errors) <= 1:
        return one_line(exc)
    more = len(exc.errors) - 1
    return (
        f"{exc.errors[0]} (and {more} more bad file{'s' * (more > 1)}: "
        f"python -m trainables.mobile_vla.check_data {data_dir} checks every file)"
    )


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
    source = find_source(args)
    from trainables.config import ConfigError
    from trainables.mobile_vla.dataset import DataError
    from trainables.mobile_vla.evaluation import run_episodes, table
    from trainables.mobile_vla.inference import Policy

    try:
        flat, validation = data_config(source, args)
        data, episodes = load_episodes(flat, validation)
        if source.exported:
            policy = Policy.from_export(source.folder)
        else:
            policy = Policy.from_checkpoint(source.folder, source.flat)
    except DataError as exc:
        raise BadInput(data_error_line(exc, flat.get("data_dir"))) from None
    except (ConfigError, ValueError, OSError) as exc:
        raise BadInput(one_line(exc)) from None
    out = Path(args.out or Path("evaluation") / source.name)
    summary = write_results(out, run_episodes(policy, data, episodes), data)
    what = "validation episodes" if validation else f"episodes of {flat['data_dir']}"
    print(f"{source.name}: {len(episodes)} {what}, actions in original units")
    print(table(summary))
    print(f"wrote {out}: {len(episodes)} episode plots, confusion.png, summary.json")
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
    sys.exit(main())
