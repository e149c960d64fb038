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
        [str(i + 1), *(cell(r.config.get(k)) for k in searched), str(r.epochs),
         f"{r.value:.4f}", r.status]
        for i, r in enumerate(rows)
    ]  # fmt: skip
    widths = [max(len(h), *(len(line[c]) for line in body)) for c, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)) for line in body]
    return "\n".join(lines)


def cell(value: Any) -> str:
    """A sampled value in 4 significant digits (the CSV keeps every digit)."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


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


def plot_parallel_coordinates(
    rows: list[TrialRow], metric: str, mode: str, searched: list[str], path: Path
) -> None:
    """One vertical axis per hyperparameter plus the metric; one line per trial,
    coloured by the metric (best = dark)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in rows if not math.isnan(r.value)]
    axes = [*searched, metric]

    def position(key: str, value: Any, values: list[Any]) -> float:
        if all(isinstance(v, (int, float)) for v in values):
            numbers = [float(v) for v in values]
            log = min(numbers) > 0 and max(numbers) / min(numbers) >= 10
            scale = (lambda x: math.log10(x)) if log else (lambda x: x)  # noqa: E731
            low, high = scale(min(numbers)), scale(max(numbers))
            return 0.5 if high == low else (scale(float(value)) - low) / (high - low)
        ordered = sorted({str(v) for v in values})
        return ordered.index(str(value)) / max(1, len(ordered) - 1)

    columns = {k: [r.config.get(k) if k != metric else r.value for r in done] for k in axes}
    fig, ax = plt.subplots(figsize=(2 + 1.6 * len(axes), 5))
    best, worst = (min, max) if mode == "min" else (max, min)
    lo, hi = (best(columns[metric]), worst(columns[metric])) if done else (0, 1)
    cmap = plt.get_cmap("viridis")
    for i, r in enumerate(done):
        ys = [position(k, columns[k][i], columns[k]) for k in axes]
        shade = 0.0 if hi == lo else (r.value - lo) / (hi - lo)
        ax.plot(range(len(axes)), ys, color=cmap(shade), alpha=0.8, linewidth=1.2)
    for x, key in enumerate(axes):
        ax.axvline(x, color="grey", linewidth=0.8)
        values = columns[key]
        if values:
            ax.text(x, -0.06, f"{short(min(values))}", ha="center", va="top", fontsize=7)
            ax.text(x, 1.04, f"{short(max(values))}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(axes)), axes, rotation=15)
    ax.set_yticks([])
    ax.set_ylim(-0.15, 1.12)
    ax.set_title(f"parallel coordinates (dark = best {metric})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
