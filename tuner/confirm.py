"""The confirmation phase: the search's top K configurations, trained again to the full
budget with more seeds, so each has N runs (the search's own run is one).

The runs are Ray Tune trials of the same sweep, in the experiment `<sweep>/confirm`: the
same trainable and resources, FIFO (every run trains fully), one trial per
(configuration, seed) pair from `confirm.json`, written before the first of them starts.
An interrupted confirmation is restored from its folder by `--resume`; nothing runs twice.
The statistics are tuner/verdict.py's; here: which runs, and where the results go.
"""

from __future__ import annotations

import csv
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuner import experiment, report, verdict
from tuner.report import TrialRow
from tuner.tune_setup import Phase, fit
from tuner.verdict import Runs

CONFIRM_DIR = "confirm"  # Ray's experiment folder inside the sweep's
PLAN_FILE = "confirm.json"
SEED_KEY = "seed"


@dataclass
class Confirmed:
    """What the summary needs: the runs of each configuration, best first, and the line."""

    runs: list[Runs]  # ranked, best first
    # configuration name -> its search trial, or for one taken from below the full budget
    # its confirmation run of the same seed (the checkpoint that trained in full)
    rows: dict[str, TrialRow]
    line: str
    failed: int
    unfinished: int  # runs an interruption left: then the verdict waits for --resume
    min_effect: float = verdict.DEFAULT_MIN_EFFECT  # the practical threshold the line used


def pick(rows: list[TrialRow], top: int) -> list[TrialRow]:
    """The `top` search trials that went furthest: by the highest epoch reached, then by
    the metric at that epoch (rows come sorted by the metric). Under ASHA only a few
    trials reach the full budget; the others taken are retrained in full (see `plan`)."""
    ranked = [r for r in rows if r.status != "failed" and not math.isnan(r.value)]
    return sorted(ranked, key=lambda r: -r.epochs)[:top]  # stable: the metric breaks ties


def plan(picked: list[TrialRow], seeds: int, default_seed: int, max_t: int) -> list[dict[str, Any]]:
    """(configuration, seed) pairs. A search trial that trained the full budget is the
    run of its own seed, so it gets the seeds after it; one stopped early gets all
    `seeds` runs, its own seed first. Every configuration so has the same seeds, and the
    paired comparison pairs like with like."""
    points = []
    for row in picked:
        first = int(row.config.get(SEED_KEY, default_seed))
        start = 1 if row.epochs >= max_t else 0
        points += [{**row.config, SEED_KEY: first + i} for i in range(start, seeds)]
    return points


def plan_line(picked: list[TrialRow], asked: int, seeds: int, runs: int, max_t: int) -> str:
    """What the confirmation trains, and why it differs from what was asked."""
    line = (
        f"confirm: the top {len(picked)} configurations, {seeds} seeds each: "
        f"{runs} more runs of {max_t} epochs"
    )
    early = [f"{r.name} (epoch {r.epochs})" for r in picked if r.epochs < max_t]
    if early:
        line += (
            f"\n  taken from below the full budget (all {seeds} seeds trained anew): "
            + "; ".join(early)
        )
    if len(picked) < asked:
        line += (
            f"\n  only {len(picked)} of the {asked} asked for: the other trials failed or "
            "reported no metric"
        )
    return line


def episode_losses(metrics: dict[str, Any], metric: str) -> list[float]:
    """The per-episode validation losses a trial reported, or its metric as one value
    (tasks without per-episode losses)."""
    per_episode = metrics.get(f"{metric}_per_episode")
    if isinstance(per_episode, list) and per_episode:
        return [float(v) for v in per_episode]
    return [float(metrics.get(metric, math.nan))]


def confirm_phase(prep: Any, storage: Any, points: list[dict]) -> Any:
    """A FIFO phase over exactly `points`, in its own folder inside the sweep's."""
    from ray import tune
    from ray.tune.schedulers import FIFOScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    varied = [*prep.searched, SEED_KEY]
    space = {**points[0]}  # constants, and each varied key as a choice of its planned values
    for key in varied:
        values: list[Any] = []
        for point in points:
            if point.get(key) not in values:
                values.append(point.get(key))
        space[key] = tune.choice(values)
    return Phase(
        name=CONFIRM_DIR,
        storage_path=storage.experiment_uri,
        param_space=space,
        search_alg=BasicVariantGenerator(points_to_evaluate=[dict(p) for p in points]),
        scheduler=FIFOScheduler(),
        num_samples=len(points),
        varied=varied,
        num_trials=len(points),
        tag="confirm",
    )


def run_phase(
    prep: Any,
    storage: Any,
    trainable: Any,
    tracking: dict,
    rows: list[TrialRow],
    search_results: Any,
    resume: bool,
) -> Confirmed | None:
    """Train the planned runs (or finish them), then rank the configurations."""
    top, seeds = prep.confirm.top, prep.confirm.seeds
    saved = storage.read_json(PLAN_FILE) if resume else None
    if saved is None:
        picked = pick(rows, top)
        if not picked:
            print("confirm: no search trial reported the metric; nothing to confirm")
            return None
        default_seed = int(prep.task.defaults.get(SEED_KEY, 0))
        saved = {
            "top": [r.trial_id for r in picked],
            "points": plan(picked, seeds, default_seed, prep.max_t),
        }
        storage.write_json(PLAN_FILE, saved)
    by_id = {r.trial_id: r for r in rows}
    picked = [by_id[t] for t in saved["top"]]
    print("\n" + plan_line(picked, top, seeds, len(saved["points"]), prep.max_t), flush=True)
    phase = confirm_phase(prep, storage, saved["points"])
    results = fit(prep, trainable, storage, phase, tracking, resume)
    unfinished = report.unfinished(results)
    if unfinished:  # interrupted: no verdict from half-trained runs until --resume
        return Confirmed([], {}, "", 0, unfinished)
    return collect(prep, picked, search_results, results)


def collect(prep: Any, picked: list[TrialRow], search_results: Any, results: Any) -> Confirmed:
    metric, searched = prep.space.metric, prep.searched
    default_seed = int(prep.task.defaults.get(SEED_KEY, 0))
    search_metrics = {
        str((r.metrics or {}).get("trial_id", "")): r.metrics or {} for r in search_results
    }
    runs, rows, first_seed = {}, {}, {}
    for row in picked:
        name = experiment.describe_config(row.config, searched)
        runs[name], rows[name] = Runs(name, [], []), row
        first_seed[name] = int(row.config.get(SEED_KEY, default_seed))
        if row.epochs >= prep.max_t:  # the full budget: the search's run is one seed
            runs[name].seeds.append(first_seed[name])
            losses = episode_losses(search_metrics.get(row.trial_id, {}), metric)
            runs[name].episodes.append(losses)
    failed = 0
    confirm_rows = report.rows_from_results(results, metric, searched, prep.max_t)
    for result, confirm_row in zip(results, confirm_rows, strict=True):
        name = experiment.describe_config(result.config, searched)
        if result.error is not None or name not in runs:
            failed += 1
            continue
        seed = int(result.config[SEED_KEY])
        runs[name].seeds.append(seed)
        runs[name].episodes.append(episode_losses(result.metrics or {}, metric))
        if seed == first_seed[name] and rows[name].epochs < prep.max_t:
            rows[name] = confirm_row  # the full-budget run stands for the configuration
    ranked = verdict.ranked(list(runs.values()), prep.space.mode)
    line = verdict.verdict(ranked, metric, prep.space.mode, prep.confirm.min_effect)
    return Confirmed(ranked, rows, line, failed, 0, prep.confirm.min_effect)


def table(confirmed: Confirmed, metric: str, mode: str) -> str:
    """The confirmed rows: each configuration's seeds, mean +- sd, and the paired
    difference to the best with its 95% interval."""
    best = confirmed.runs[0]
    lines = [f"confirmed ({metric}, mean over validation episodes; per seed, mean +- sd):"]
    for i, runs in enumerate(confirmed.runs):
        stats = verdict.config_stats(runs)
        values = " ".join(f"{v:.4f}" for v in stats.values)
        text = f"  {i + 1}  {runs.name:<36} {values}   {stats.mean:.4f} +- {stats.sd:.4f}"
        if i:
            c = verdict.paired(best, runs, mode)
            text += f"   behind the best by {verdict.difference(c)}"
        lines.append(text)
    return "\n".join(lines)


def write_csv(confirmed: Confirmed, mode: str, path: Path) -> None:
    best = confirmed.runs[0]
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        header = ["rank", "config", "seed", "value", "mean", "sd", "diff", "relative", "low"]
        out.writerow([*header, "high"])
        for i, runs in enumerate(confirmed.runs):
            stats = verdict.config_stats(runs)
            c = verdict.paired(best, runs, mode) if i else None
            extra = [c.diff, c.relative, c.low, c.high] if c else ["", "", "", ""]
            for seed, value in zip(runs.seeds, stats.values, strict=True):
                out.writerow([i + 1, runs.name, seed, value, stats.mean, stats.sd, *extra])


def plot(confirmed: Confirmed, metric: str, path: Path) -> None:
    """Per configuration: each seed's value, and the mean with its 95% t-interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.6 * len(confirmed.runs)))
    for y, runs in enumerate(confirmed.runs):
        stats = verdict.config_stats(runs)
        half = verdict.t95(stats.n - 1) * stats.sd / math.sqrt(stats.n) if stats.n > 1 else 0
        ax.scatter(stats.values, [y] * stats.n, color="tab:gray", s=18, zorder=2)
        ax.errorbar(stats.mean, y, xerr=half, fmt="o", color="tab:blue", capsize=4, zorder=3)
    ax.set_yticks(range(len(confirmed.runs)), [r.name for r in confirmed.runs])
    ax.invert_yaxis()
    ax.set_xlabel(f"{metric} (seeds in gray; mean with 95% interval in blue)")
    ax.set_title(confirmed.line, fontsize=8, wrap=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def log(confirmed: Confirmed, prep: Any, tracker: Any, parent_id: str) -> None:
    """The parent run's confirm.csv and confirm.png (tuner.summary tags the verdict)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        write_csv(confirmed, prep.space.mode, out / "confirm.csv")
        plot(confirmed, prep.space.metric, out / "confirm.png")
        for name in ("confirm.csv", "confirm.png"):
            tracker.log_artifacts(parent_id, out / name)
