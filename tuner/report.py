"""The end of a sweep: the trial table, the best configuration, CSV and plots."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuner.experiment import describe_config


@dataclass
class TrialRow:
    name: str
    trial_id: str
    config: dict[str, Any]
    epochs: int
    value: float  # the sweep's metric at the trial's last report (nan if none)
    status: str  # completed | asha at epoch N | failed
    checkpoint: str | None
    history: list[tuple[int, float]]  # (epoch, metric)


def unfinished(results: Any) -> int:
    """Trials a Tuner left neither terminated nor errored (`--resume` finishes them). Read
    from the experiment's saved state: after Ctrl-C, Tune returns from fit() with the
    interrupted trials stopped, and in memory they read as terminated."""
    from ray.tune import ExperimentAnalysis

    analysis = ExperimentAnalysis(results.experiment_path, storage_filesystem=results.filesystem)
    return sum(t.status not in ("TERMINATED", "ERROR") for t in analysis.trials)


def rows_from_results(results, metric: str, searched: list[str], max_t: int) -> list[TrialRow]:
    rows = []
    for result in results:
        metrics = result.metrics or {}
        epochs = int(metrics.get("training_iteration", 0))
        value = float(metrics.get(metric, math.nan))
        if result.error is not None:
            status = "failed"
        elif epochs >= max_t:
            status = "completed"
        else:
            status = f"asha at epoch {epochs}"
        history = []
        frame = result.metrics_dataframe
        if frame is not None and metric in frame:
            history = [
                (int(e), float(v))
                for e, v in zip(frame["training_iteration"], frame[metric], strict=True)
                if not math.isnan(v)
            ]
        rows.append(
            TrialRow(
                name=describe_config(result.config, searched),
                trial_id=str(metrics.get("trial_id", "")),
                config=result.config,
                epochs=epochs,
                value=value,
                status=status,
                checkpoint=result.checkpoint.path if result.checkpoint else None,
                history=history,
            )
        )
    return rows


def sort_rows(rows: list[TrialRow], mode: str) -> list[TrialRow]:
    sign = 1 if mode == "min" else -1
    return sorted(
        rows, key=lambda r: (math.isnan(r.value), 0 if math.isnan(r.value) else sign * r.value)
    )


def table(rows: list[TrialRow], metric: str, searched: list[str]) -> str:
    headers = ["#", *searched, "epochs", metric, "status"]
    body = [
        [str(i + 1), *(short(r.config.get(k), 4) for k in searched), str(r.epochs),
         f"{r.value:.4f}", r.status]
        for i, r in enumerate(rows)
    ]  # fmt: skip
    widths = [max(len(h), *(len(line[c]) for line in body)) for c, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)) for line in body]
    return "\n".join(lines)


def short(value: Any, digits: int = 3) -> str:
    """A sampled value in a few significant digits (the CSV keeps every digit)."""
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def write_csv(rows: list[TrialRow], metric: str, searched: list[str], path: Path) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["trial", *searched, "epochs", metric, "status", "checkpoint"])
        for r in rows:
            writer.writerow(
                [r.name, *(r.config.get(k) for k in searched), r.epochs, r.value, r.status,
                 r.checkpoint or ""]
            )  # fmt: skip


def plot_learning_curves(rows: list[TrialRow], metric: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for r in rows:
        if r.history:
            epochs, values = zip(*r.history, strict=True)
            ax.plot(epochs, values, marker="o", markersize=3, linewidth=1, label=r.name)
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} per epoch ({len(rows)} trials)")
    if len(rows) <= 12:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


LOG_SCALE_KEYS = ("learning_rate", "weight_decay")  # searched in decades, shown in decades
MAX_TICKS = 8  # label every distinct value up to this many; else only the ends


def log_scaled_keys(space: Any) -> set[str]:
    """Parameters searched on a log scale: loguniform ones, and learning rate / weight
    decay when every value is > 0 (a weight decay grid with 0 stays linear)."""
    keys = set()
    for key, dist in space.params.items():
        numbers = [a for a in dist.args if isinstance(a, (int, float))]
        positive = len(numbers) == len(dist.args) and min(numbers, default=0) > 0
        if dist.kind == "loguniform" or (key in LOG_SCALE_KEYS and positive):
            keys.add(key)
    return keys


def axis_position(value: Any, values: list[Any], log: bool) -> float:
    """Where `value` sits on an axis holding `values`, in [0, 1]: numbers by value (by
    decade when `log`), anything else in sorted order."""
    if all(isinstance(v, (int, float)) for v in values):
        numbers = [float(v) for v in values]
        log = log and min(numbers) > 0
        scale = math.log10 if log else float
        low, high = scale(min(numbers)), scale(max(numbers))
        return 0.5 if high == low else (scale(float(value)) - low) / (high - low)
    ordered = sorted({str(v) for v in values})
    return ordered.index(str(value)) / max(1, len(ordered) - 1)


def axis_ticks(values: list[Any], log: bool) -> list[tuple[float, str]]:
    """(position, label) of the values to label: each distinct one (the grid), or the
    ends when there are many."""
    distinct = sorted(set(values), key=lambda v: (not isinstance(v, (int, float)), v))
    if len(distinct) > MAX_TICKS:
        distinct = [distinct[0], distinct[-1]]
    return [(axis_position(v, values, log), short(v)) for v in distinct]


def drawing_order(values: list[float], mode: str) -> list[int]:
    """Indexes worst first: the best trial's line is drawn last, on top of the others."""
    sign = 1 if mode == "min" else -1
    return sorted(range(len(values)), key=lambda i: -sign * values[i])


def plot_parallel_coordinates(
    rows: list[TrialRow],
    metric: str,
    mode: str,
    searched: list[str],
    path: Path,
    log_keys: set[str] | None = None,
) -> None:
    """One vertical axis per hyperparameter plus the metric; one line per trial,
    coloured by the metric (best = dark). `log_keys` axes are by decade (default: any
    positive axis spanning a factor of 10 or more)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in rows if not math.isnan(r.value)]
    axes = [*searched, metric]
    columns = {k: [r.config.get(k) if k != metric else r.value for r in done] for k in axes}

    def is_log(key: str) -> bool:
        if log_keys is not None and key != metric:
            return key in log_keys
        numbers = [v for v in columns[key] if isinstance(v, (int, float))]
        return bool(numbers) and min(numbers) > 0 and max(numbers) / min(numbers) >= 10

    fig, ax = plt.subplots(figsize=(2 + 1.6 * len(axes), 5))
    best, worst = (min, max) if mode == "min" else (max, min)
    lo, hi = (best(columns[metric]), worst(columns[metric])) if done else (0, 1)
    cmap = plt.get_cmap("viridis")
    shades = [0.0 if hi == lo else (r.value - lo) / (hi - lo) for r in done]
    # A marker on the metric axis says at which epoch each trial's value was taken (ASHA
    # stops trials at different ones).
    markers = dict(zip(sorted({r.epochs for r in done}), "os^Dv<>p*", strict=False))
    order = drawing_order([r.value for r in done], mode)
    for i in order:
        ys = [axis_position(columns[k][i], columns[k], is_log(k)) for k in axes]
        top = i == order[-1]
        color = cmap(shades[i])
        ax.plot(range(len(axes)), ys, color=color, alpha=0.8, linewidth=2.4 if top else 1.2)
        ax.plot(len(axes) - 1, ys[-1], markers.get(done[i].epochs, "o"), color=color, ms=5)
    for epochs, marker in markers.items():
        ax.plot([], [], marker, color="grey", label=f"{metric} at epoch {epochs}")
    if markers:
        ax.legend(loc="upper right", fontsize=7, frameon=False)
    for x, key in enumerate(axes):
        ax.axvline(x, color="grey", linewidth=0.8)
        if not columns[key]:
            continue
        ticks = axis_ticks(columns[key], is_log(key)) if key != metric else [
            (axis_position(v, columns[key], False), short(v))
            for v in (min(columns[key]), max(columns[key]))
        ]  # fmt: skip
        for y, label in ticks:
            ax.plot([x - 0.04, x], [y, y], color="grey", linewidth=0.8)
            ax.text(x - 0.06, y, label, ha="right", va="center", fontsize=7)
        if is_log(key):
            ax.text(x, 1.04, "log", ha="center", va="bottom", fontsize=7, color="grey")
    ax.set_xticks(range(len(axes)), axes, rotation=15)
    ax.set_yticks([])
    ax.set_ylim(-0.08, 1.1)
    ax.set_xlim(-0.5, len(axes) - 0.8)
    ax.set_title(f"parallel coordinates (dark, on top = best {metric}; marker = its epoch)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
