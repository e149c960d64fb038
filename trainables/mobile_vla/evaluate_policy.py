"""`python -m tuner.evaluate` for the Mobile VLA policy (the task's `evaluate` hook).

Runs a checkpoint (or an export folder) over the validation episodes, or every episode
of another folder, and writes one PNG per episode, confusion.png and summary.json. Bad
input is a ValueError whose message is the one line the tuner prints.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from trainables.mobile_vla import action_plots, evaluation
from trainables.mobile_vla.dataset import DataError, MobileVLAData, load_dataset
from trainables.mobile_vla.inference import Policy
from trainables.mobile_vla.trial_config import parse_config
from trainables.task import EvaluationRequest


def episodes_to_run(
    flat: dict[str, Any], data_dir: str | None, pattern: str | None
) -> tuple[MobileVLAData, list[int], str]:
    """(dataset, episode ids, what they are): the validation split, or every episode of
    `data_dir`."""
    flat = dict(flat)
    if data_dir:
        flat.update(data_dir=data_dir, val_ratio=0.0)
    if pattern:
        flat["pattern"] = pattern
    try:
        data = load_dataset(parse_config(flat).data, progress=False)
    except DataError as exc:
        raise ValueError(data_error_line(exc, flat.get("data_dir"))) from None
    if data_dir:
        return data, list(range(data.num_episodes)), f"episodes of {data_dir}"
    episodes = [int(e) for e in np.unique(data.val.episode)]
    if not episodes:
        raise ValueError(f"{flat['data_dir']}: no validation episodes (give --data-dir)")
    return data, episodes, "validation episodes"


def data_error_line(exc: DataError, data_dir: str | None) -> str:
    """The first bad file as check_data names it (`path: reason`), and how to list all."""
    if len(exc.errors) <= 1:
        return " ".join(str(exc).split())
    more = len(exc.errors) - 1
    return (
        f"{exc.errors[0]} (and {more} more bad file{'s' * (more > 1)}: "
        f"python -m trainables.mobile_vla.check_data {data_dir} checks every file)"
    )


def write_results(out: Path, results: list, data: MobileVLAData) -> dict[str, Any]:
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


def evaluate(request: EvaluationRequest) -> list[str]:
    """Evaluate the policy in `request.folder`; the lines to print."""
    flat = {**request.flat, **request.sets}
    data, episodes, what = episodes_to_run(flat, request.data_dir, request.pattern)
    folder, out = request.folder, request.out
    if request.exported:
        policy = Policy.from_export(folder)
    else:
        policy = Policy.from_checkpoint(folder, request.flat)
    summary = write_results(out, evaluation.run_episodes(policy, data, episodes), data)
    return [
        f"{len(episodes)} {what}, actions in original units",
        evaluation.table(summary),
        f"wrote {out}: {len(episodes)} episode plots, confusion.png, summary.json",
    ]
