"""What mattered: after the search, how much of the metric's variation each searched
hyperparameter explains (fANOVA, through `optuna.importance`), and the mean metric at
each of its values.

Under ASHA most trials stop early, so trials are compared at the highest epoch every one
of them reached (named in the output): a later epoch would compare only the survivors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuner.report import short

MIN_TRIALS = 4
MAX_SHOWN_VALUES = 8  # more distinct values (a sampled range): no per-value means


@dataclass
class Importance:
    metric: str
    epoch: int  # the epoch every trial reached, where they are compared
    trials: int
    importances: dict[str, float]  # name -> share of the variance, sorted, largest first
    points: dict[str, list[tuple[Any, float]]]  # name -> (value, metric) per trial
    means: dict[str, list[tuple[Any, float]]]  # name -> (value, mean metric), by value

    def block(self) -> str:
        lines = [
            f"what mattered (fANOVA over {self.trials} trials at epoch {self.epoch}, "
            f"{self.metric}; mean {self.metric} per value):"
        ]
        width = max(len(name) for name in self.importances)
        for name, share in self.importances.items():
            means = self.means[name]
            effect = (
                "  ".join(f"{short(v)}: {m:.4g}" for v, m in means)
                if len(means) <= MAX_SHOWN_VALUES
                else f"{len(means)} values (see marginals.png)"
            )
            lines.append(f"  {name:<{width}}  {share:5.2f}   {effect}")
        return "\n".join(lines)


def compared_values(rows: list[Any]) -> tuple[int, list[tuple[dict, float]]]:
    """(epoch, [(config, metric at that epoch)]) over the trials that reported it: the
    highest epoch every trial with a result reached."""
    ran = [r for r in rows if r.status != "failed" and r.history]
    if not ran:
        return 0, []
    epoch = min(max(e for e, _ in r.history) for r in ran)
    values = []
    for row in ran:
        at = dict(row.history)
        if epoch in at and not math.isnan(at[epoch]):
            values.append((row.config, at[epoch]))
    return epoch, values


def varied_keys(values: list[tuple[dict, float]], searched: list[str]) -> list[str]:
    """The searched keys that took 2 or more values among the compared trials."""
    return [k for k in searched if len({repr(c.get(k)) for c, _ in values}) >= 2]


def skip_reason(values: list[tuple[dict, float]], varied: list[str]) -> str | None:
    if len(values) < MIN_TRIALS:
        return f"only {len(values)} trials with a result (it needs {MIN_TRIALS})"
    if not varied:
        return "fewer than 2 values of every searched hyperparameter"
    return None


def distribution(values: list[Any], log: bool) -> Any:
    import optuna

    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        low, high = float(min(values)), float(max(values))
        return optuna.distributions.FloatDistribution(low, high, log=log and low > 0)
    return optuna.distributions.CategoricalDistribution(sorted({repr(v) for v in values}))


def analyse(
    rows: list[Any], metric: str, mode: str, searched: list[str], log_keys: set[str]
) -> Importance | str:
    """The importances and per-value means, or why there are none."""
    import optuna

    epoch, values = compared_values(rows)
    varied = varied_keys(values, searched)
    reason = skip_reason(values, varied)
    if reason:
        return reason
    dists = {k: distribution([c[k] for c, _ in values], k in log_keys) for k in varied}

    def param(key: str, value: Any) -> Any:
        categorical = isinstance(dists[key], optuna.distributions.CategoricalDistribution)
        return repr(value) if categorical else float(value)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize" if mode == "min" else "maximize")
    for config, value in values:
        study.add_trial(
            optuna.trial.create_trial(
                params={k: param(k, config[k]) for k in varied}, distributions=dists, value=value
            )
        )
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
    importances = optuna.importance.get_param_importances(study, evaluator=evaluator)
    points = {k: [(c[k], v) for c, v in values] for k in varied}
    means = {}
    for key in varied:
        groups: dict[str, list[float]] = {}
        first: dict[str, Any] = {}
        for value, metric_value in points[key]:
            groups.setdefault(repr(value), []).append(metric_value)
            first.setdefault(repr(value), value)
        ordered = sorted(first, key=lambda r: sort_key(first[r]))
        means[key] = [(first[r], sum(groups[r]) / len(groups[r])) for r in ordered]
    return Importance(metric, epoch, len(values), dict(importances), points, means)


def sort_key(value: Any) -> tuple:
    return (0, float(value), "") if isinstance(value, (int, float)) else (1, 0.0, str(value))


def plot_importance(result: Importance, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result.importances)[::-1]  # largest on top
    fig, ax = plt.subplots(figsize=(6, 0.5 * len(names) + 1.5))
    ax.barh(names, [result.importances[n] for n in names], color="tab:blue")
    ax.set_xlabel("share of the variance (fANOVA)")
    ax.set_title(f"{result.metric} at epoch {result.epoch}, {result.trials} trials")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_marginals(result: Importance, log_keys: set[str], path: Path) -> None:
    """The metric against each hyperparameter: a point per trial, the mean per value."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result.importances)
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3.5), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        numeric = all(isinstance(v, (int, float)) for v, _ in result.points[name])
        order = [v for v, _ in result.means[name]]

        def x(value: Any, numeric: bool = numeric, order: list = order) -> Any:
            return float(value) if numeric else order.index(value)

        ax.scatter([x(v) for v, _ in result.points[name]], [m for _, m in result.points[name]],
                   alpha=0.5, s=14, label="trial")  # fmt: skip
        ax.plot([x(v) for v, _ in result.means[name]], [m for _, m in result.means[name]],
                color="tab:red", marker="o", label="mean")  # fmt: skip
        if numeric and name in log_keys and min(float(v) for v in order) > 0:
            ax.set_xscale("log")
        if not numeric:
            ax.set_xticks(range(len(order)), [short(v) for v in order])
        ax.set_xlabel(name)
        ax.set_title(f"importance {result.importances[name]:.2f}")
    axes[0][0].set_ylabel(f"{result.metric} at epoch {result.epoch}")
    axes[0][0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def report_importance(prep: Any, rows: list[Any], tracker: Any, parent_id: str) -> str:
    """Analyse the search, log params and plots on the parent run; returns the block."""
    import tempfile

    from tuner.report import log_scaled_keys

    space = prep.space
    log_keys = log_scaled_keys(space)
    result = analyse(rows, space.metric, space.mode, prep.searched, log_keys)
    if isinstance(result, str):
        return f"what mattered: skipped: {result}"
    for name, share in result.importances.items():
        tracker.client.log_param(parent_id, f"importance.{name}", f"{share:.4f}")
    tracker.client.log_param(parent_id, "importance.epoch", result.epoch)
    with tempfile.TemporaryDirectory() as tmp:
        plot_importance(result, Path(tmp) / "importance.png")
        plot_marginals(result, log_keys, Path(tmp) / "marginals.png")
        for name in ("importance.png", "marginals.png"):
            tracker.log_artifacts(parent_id, Path(tmp) / name)
    return result.block()
