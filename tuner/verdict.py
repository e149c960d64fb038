"""Is the best configuration really ahead? Seed statistics of the confirmed configurations.

Pure functions over numbers: no Ray, no MLflow. Each confirmed configuration has N runs
(seeds), each with the loss of every validation episode (the same episodes for every
run). For a configuration: its value per seed is the mean over the episodes; we report
the mean and the standard deviation over seeds. For the best against another: per seed,
the per-episode differences averaged over the episodes (pairing on the same episodes
cancels how hard each episode is), then a 95% t-interval over the seeds, so the interval
is as wide as the seed noise. An interval that holds 0 means: not separable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Two-sided 95% quantiles of Student's t by degrees of freedom (no scipy needed).
T95 = {
    1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
    9: 2.262, 10: 2.228, 12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042,
}  # fmt: skip


def t95(df: int) -> float:
    """The 95% t quantile; between table entries the next smaller df (a wider interval)."""
    if df < 1:
        return math.nan
    if df > 30:
        return 1.96
    return T95[max(d for d in T95 if d <= df)]


@dataclass
class Runs:
    """One configuration's runs: the seed and the per-episode losses of each."""

    name: str
    seeds: list[int]
    episodes: list[list[float]]


@dataclass
class ConfigStats:
    name: str
    values: list[float]  # per seed: the mean over the validation episodes
    mean: float
    sd: float  # over seeds (n - 1); 0 for one seed

    @property
    def n(self) -> int:
        return len(self.values)


@dataclass
class Comparison:
    """How far `other` is behind the best (positive: the best is ahead)."""

    other: str
    diff: float
    low: float
    high: float
    seeds: int

    @property
    def separable(self) -> bool:
        return self.low > 0


def config_stats(runs: Runs) -> ConfigStats:
    values = [float(np.mean(e)) for e in runs.episodes]
    sd = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return ConfigStats(runs.name, values, float(np.mean(values)), sd)


def ranked(all_runs: list[Runs], mode: str) -> list[Runs]:
    """Best first, by the mean over seeds."""
    sign = 1 if mode == "min" else -1
    return sorted(all_runs, key=lambda r: sign * config_stats(r).mean)


def paired(best: Runs, other: Runs, mode: str) -> Comparison:
    """The paired difference over the seeds both have, and its 95% t-interval."""
    sign = 1 if mode == "min" else -1
    by_seed = dict(zip(other.seeds, other.episodes, strict=True))
    per_seed = []
    for seed, episodes in zip(best.seeds, best.episodes, strict=True):
        if seed in by_seed:
            if len(by_seed[seed]) != len(episodes):
                raise ValueError(
                    f"{best.name} and {other.name} were validated on different episodes"
                )
            diffs = sign * (np.asarray(by_seed[seed]) - np.asarray(episodes))
            per_seed.append(float(diffs.mean()))
    n = len(per_seed)
    if n == 0:
        return Comparison(other.name, math.nan, math.nan, math.nan, 0)
    diff = float(np.mean(per_seed))
    if n == 1:
        return Comparison(other.name, diff, math.nan, math.nan, 1)
    half = t95(n - 1) * float(np.std(per_seed, ddof=1)) / math.sqrt(n)
    return Comparison(other.name, diff, diff - half, diff + half, n)


def cannot_rank(all_runs: list[Runs]) -> bool:
    """Every run of every configuration has the same per-seed value (e.g. all 0.0)."""
    values = [v for r in all_runs for v in config_stats(r).values]
    return len(all_runs) > 1 and max(values) == min(values)


def verdict(all_runs: list[Runs], metric: str, mode: str) -> str:
    """The one line: the best, its seed spread, and whether it beats the runner-up."""
    if not all_runs:
        return "no configuration to confirm"
    order = ranked(all_runs, mode)
    best = config_stats(order[0])
    if cannot_rank(all_runs):
        return (
            f"the metric cannot rank them: {len(all_runs)} configurations all at {metric} "
            f"{best.mean:.4f} on every seed"
        )
    line = f"best {best.name}: {metric} {best.mean:.4f} +- {best.sd:.4f} ({best.n} seeds)"
    if len(order) == 1:
        return line
    runner = paired(order[0], order[1], mode)
    if runner.separable:
        return (
            f"{line}; ahead of {runner.other} by {runner.diff:.3g} "
            f"[{runner.low:.3g}, {runner.high:.3g}]"
        )
    return f"{line}; not separable from {runner.other}: the difference is within seed noise"


def search_tie(values: list[float], metric: str) -> str | None:
    """When the search's top trials end at exactly the same value, say so instead of
    naming an arbitrary one best."""
    finite = [v for v in values if not math.isnan(v)]
    if len(finite) < 2 or finite[0] != finite[1]:
        return None
    tied = sum(v == finite[0] for v in finite)
    return f"the metric cannot rank the top {tied} trials: all at {metric} {finite[0]:.4f}"
