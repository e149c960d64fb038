"""After the sweep: the table, the best trial, artifacts in MLflow, best.json for export."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

from trainables.training_state import TRIAL_CONFIG_FILE
from tuner import confirm, report, verdict
from tuner.disk import human_bytes
from tuner.export import entries_bytes, weight_entries
from tuner.storage import BEST_FILE
from tuner.tracking import VERDICT_TAG, runs_page_url


def sorted_rows(prep: Any, results: Any) -> list[report.TrialRow]:
    """The search's trials, best first."""
    space = prep.space
    return report.sort_rows(
        report.rows_from_results(results, space.metric, prep.searched, prep.max_t), space.mode
    )


def finish(
    prep: Any,
    storage: Any,
    tracker: Any,
    parent_id: str,
    rows: list[report.TrialRow],
    uri: str,
    unfinished: int,
    confirmed: confirm.Confirmed | None = None,
) -> int:
    """The table, the best trial (the confirmed best when there is one), its files in
    MLflow and best.json; the exit status. `rows`: the search's trials, best first
    (`sorted_rows`); `unfinished`: those left over."""
    space = prep.space
    failed = [r for r in rows if r.status == "failed"]
    if confirmed is not None and confirmed.unfinished:
        unfinished += confirmed.unfinished
        confirmed = None  # an interrupted confirmation names no winner until --resume
    print()
    print(report.table(rows, space.metric, prep.searched))

    best = next((r for r in rows if r.status != "failed" and not math.isnan(r.value)), None)
    if confirmed is not None:
        print()
        print(confirm.table(confirmed, space.metric, space.mode))
        confirm.log(confirmed, prep, tracker, parent_id)
        best = confirmed.rows[confirmed.runs[0].name]  # the confirmed best's search trial
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        report.write_csv(rows, space.metric, prep.searched, out / "results.csv")
        report.plot_learning_curves(rows, space.metric, out / "learning_curves.png")
        report.plot_parallel_coordinates(
            rows,
            space.metric,
            space.mode,
            prep.searched,
            out / "parallel_coordinates.png",
            report.log_scaled_keys(space),
        )
        for name in ("results.csv", "learning_curves.png", "parallel_coordinates.png"):
            tracker.log_artifacts(parent_id, out / name)
        if best is not None:
            best_info = best_record(best, space, tracker, uri)
            if confirmed is not None:
                best_info["confirmed"] = confirmed_record(confirmed)
            tracker.log_json(parent_id, best_info, "best_config.json")
            if best_info["mlflow_run_id"]:
                tracker.client.set_tag(best_info["mlflow_run_id"], "vla_tune.best", "true")
                if best.checkpoint and Path(best.checkpoint).is_dir():
                    for entry in weight_entries(Path(best.checkpoint)):
                        tracker.log_artifacts(best_info["mlflow_run_id"], entry, entry.name)
                tracker.log_json(best_info["mlflow_run_id"], best.config, TRIAL_CONFIG_FILE)
            storage.write_json(BEST_FILE, best_info)
    tie = verdict.search_tie([r.value for r in rows if r.status != "failed"], space.metric)
    said = confirmed.line if confirmed is not None else tie
    if said:  # in MLflow too, where the trials are compared
        tracker.client.set_tag(parent_id, VERDICT_TAG, said[:5000])
    status = "FAILED" if failed else ("KILLED" if unfinished else "FINISHED")
    tracker.finish_parent(status)

    print()
    if confirmed is not None:
        print(f"verdict: {said}")
    elif tie:
        print(tie)
    if best is not None:
        print(f"best {space.metric} {best.value:.4f}: {best.name}")
        print(f"  config   {json.dumps({k: best.config[k] for k in prep.searched})}")
        if best.checkpoint:
            print(weights_line(best.checkpoint))
    early = sum(r.status.startswith("asha") for r in rows)
    print(
        f"{len(rows)} trials: {len(rows) - early - len(failed)} completed, "
        f"{early} stopped early by ASHA, {len(failed)} failed"
    )
    print(f"compare them:  mlflow ui --backend-store-uri {uri}")
    print(f"  runs page:   {runs_page_url(uri, tracker.experiment_id)}")
    print(f"export best:   python -m tuner.export --name {storage.name}")
    if unfinished:
        print(f"{unfinished} trials unfinished: python -m tuner.run --resume --name {storage.name}")
        return 130
    return 1 if failed or (confirmed and confirmed.failed) else 0


def weights_line(checkpoint: str) -> str:
    """Where the best trial's weights are, in whatever form (a LoRA adapter, or a full
    fine-tune's trained weights: the whole model, so often GBs)."""
    if not Path(checkpoint).is_dir():  # on remote storage
        return f"  weights  {checkpoint}"
    entries = weight_entries(Path(checkpoint))
    size = entries_bytes(entries)
    names = ", ".join(e.name + ("/" if e.is_dir() else "") for e in entries)
    return f"  weights  {checkpoint}: {names} ({human_bytes(size)})"


def confirmed_record(confirmed: confirm.Confirmed) -> dict[str, Any]:
    stats = verdict.config_stats(confirmed.runs[0])
    return {
        "verdict": confirmed.line,
        "min_effect": confirmed.min_effect,
        "seeds": confirmed.runs[0].seeds,
        "values": stats.values,
        "mean": stats.mean,
        "sd": stats.sd,
    }


def best_record(best: Any, space: Any, tracker: Any, uri: str) -> dict[str, Any]:
    run_id = tracker.trial_run_id(best.trial_id) if best.trial_id else None
    return {
        "trial": best.name,
        "trial_id": best.trial_id,
        "metric": space.metric,
        "mode": space.mode,
        "value": best.value,
        "epochs": best.epochs,
        "config": best.config,
        "checkpoint": best.checkpoint,
        "mlflow_uri": uri,
        "mlflow_run_id": run_id,
        "space": space.name,
        "trainable": space.trainable,
    }
